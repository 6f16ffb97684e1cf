"""`make run`'s environment, kept in `.env`: the file Flask's CLI reads (python-dotenv), so a second terminal's
`flask --app wsgi jobs health` finds the same database and secret with nothing exported.

    python -m jobprocessor.devenv prepare [ENV_FILE] [--database NAME]

adds what `.env` lacks: generated secrets (CRON_SECRET, the dashboard's DASHBOARD_SECRET and DASHBOARD_SESSION_KEY),
and, unless a DATABASE_URL is given (in the environment, or a line of your own in `.env`), the URL of the embedded
PostgreSQL, which it starts. That line carries the marker comment
below, so the next run knows it is its own and rewrites it (the embedded server's port is chosen once per
`.pgdata/`). It prints `export NAME=value` lines for the shell to eval: the file's settings, except those the
environment already sets (the environment wins, as with python-dotenv). Dev only, like devdb.
"""
from __future__ import annotations

import argparse
import io
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Mapping

MARKER = ("# make run: the embedded PostgreSQL below (make db-stop stops it; "
          "a DATABASE_URL of your own replaces both lines)")


# the cron's secret, the dashboard operators' sign-in secret and the key that signs its session cookies
GENERATED_SECRETS = ("CRON_SECRET", "DASHBOARD_SECRET", "DASHBOARD_SESSION_KEY")


def _parse(lines: list[str]) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(stream=io.StringIO("\n".join(lines))).items() if v is not None}


def _managed_index(lines: list[str]) -> int | None:
    """The index of make run's own DATABASE_URL line (the one after the marker), if any."""
    for i, line in enumerate(lines[:-1]):
        if line.strip() == MARKER and lines[i + 1].startswith("DATABASE_URL="):
            return i + 1
    return None


def prepare(env_file: Path, environ: Mapping[str, str], database: str = "jobprocessor",
            say=lambda message: print(message, file=sys.stderr)) -> dict[str, str]:
    """Bring `env_file` up to date; returns the settings to export (the file's, less what `environ` sets)."""
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    values = _parse(lines)
    for name in GENERATED_SECRETS:
        if not environ.get(name) and not values.get(name):
            lines.append(f"{name}={secrets.token_urlsafe(32)}")
            say(f"Generated a {name} into {env_file}")
    managed = _managed_index(lines)
    own_url = values.get("DATABASE_URL") and managed is None
    if not environ.get("DATABASE_URL") and not own_url:
        from . import devdb

        devdb.start()
        devdb.create_database(database)
        line = f"DATABASE_URL={devdb.url(database)}"
        if managed is None:
            lines += [MARKER, line]
        else:
            lines[managed] = line
        say(f"Embedded PostgreSQL: {devdb.url(database)} (data in .pgdata/; written to {env_file})")
    env_file.write_text("\n".join(lines) + "\n")
    return {name: value for name, value in _parse(lines).items() if name not in environ}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobprocessor.devenv")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("env_file", nargs="?", default=".env")
    parser.add_argument("--database", default="jobprocessor")
    args = parser.parse_args(argv)
    exports = prepare(Path(args.env_file), os.environ, args.database)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
