#!/usr/bin/env bash
# The whole test suite against a real PostgreSQL: TEST_DATABASE_URL, else DATABASE_URL, else the embedded server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if [ -n "${DATABASE_URL:-}" ]; then
    export TEST_DATABASE_URL="$DATABASE_URL"
  else
    export TEST_DATABASE_URL="$($PY -m jobprocessor.devdb start jobprocessor_test)"
  fi
fi
unset DATABASE_URL CRON_SECRET JOBPROCESSOR_HANDLERS
"$PY" -m ruff check --quiet .  # the linter first (ruff.toml): a finding fails the run, as a failing test does
# a developer's .env (make run's) never reaches the flask commands the tests start (tests of it set their own)
export FLASK_SKIP_DOTENV=1
# Worker processes (pytest-xdist, one database each; a test file stays in one worker for its module fixtures):
# most of the suite waits on servers it started, so two workers roughly halve it on two cores. TEST_WORKERS=0 runs
# it in this process; a later -n in PYTEST_ARGS wins.
exec "$PY" -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
