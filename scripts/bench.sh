#!/usr/bin/env bash
# make bench: the drain benchmark of issue 2 (bench/drain.py; figures in docs/BENCHMARKS.md).
# The embedded PostgreSQL (database jobprocessor_bench) unless DATABASE_URL is set; the jobs schema by the
# migrations; pgqueuer in its own venv (bench/.venv-pgqueuer) with its schema from `pgq install`, so the project's
# own dependencies stay as they are. Arguments go to bench/drain.py (e.g. --rounds 3, --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PGQ_VENV=bench/.venv-pgqueuer
PGQ_REQS=bench/requirements-pgqueuer.txt
export PATH="$PWD/.venv/bin:$PATH"

if [ ! -x "$PGQ_VENV/bin/python" ] || ! cmp -s "$PGQ_REQS" "$PGQ_VENV/.installed-requirements"; then
  python3 -m venv "$PGQ_VENV"
  "$PGQ_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PGQ_REQS"
  cp "$PGQ_REQS" "$PGQ_VENV/.installed-requirements"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL="$($PY -m jobprocessor.devdb start jobprocessor_bench)"
fi
export DATABASE_URL
flask --app wsgi db upgrade
# pgqueuer's own installer; it refuses (exit 1) when its schema is already there, which is fine
if ! "$PGQ_VENV/bin/pgq" --pg-dsn "$DATABASE_URL" verify --expect present >/dev/null 2>&1; then
  "$PGQ_VENV/bin/pgq" --pg-dsn "$DATABASE_URL" install
fi

unset CRON_SECRET JOBPROCESSOR_HANDLERS JOBS_CONCURRENCY WEB_CONCURRENCY GUNICORN_THREADS
exec "$PY" bench/drain.py "$@"
