#!/usr/bin/env bash
# make chaos: the long fault-injection and load runs (docs/RELIABILITY.md), each against a real gunicorn and a
# fresh database `jobprocessor_chaos` on the embedded PostgreSQL (or CHAOS_DATABASE_URL). Several minutes.
#   make chaos                      soak (100,000 jobs, workers killed) then load (50 callers x 60 s, twice)
#   make chaos CHAOS_ARGS="--jobs 5000" LOAD_ARGS="--seconds 10"   a short run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ -z "${CHAOS_DATABASE_URL:-}" ]; then
  export CHAOS_DATABASE_URL="$($PY -m jobprocessor.devdb start jobprocessor_chaos)"
fi
unset DATABASE_URL CRON_SECRET JOBPROCESSOR_HANDLERS
export PYTHONPATH="$PWD"
echo "== soak: $CHAOS_DATABASE_URL"
$PY -m tests.chaos.soak ${CHAOS_ARGS:-}
echo "== load"
$PY bench/load.py ${LOAD_ARGS:-}
