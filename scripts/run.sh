#!/usr/bin/env bash
# make run: embedded PostgreSQL (unless DATABASE_URL is set), migrations, a secret in .env, gunicorn on
# 127.0.0.1:8000, and a tick of POST /process-pending every minute, as an external cron would send it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

# .env, the file Flask's CLI reads too: a generated CRON_SECRET and, unless you give a DATABASE_URL, the embedded
# PostgreSQL's URL (started here), so `flask --app wsgi jobs ...` in another terminal finds both. The environment
# wins over the file.
exports="$($PY -m jobprocessor.devenv prepare .env)"  # an assignment, so that a failure stops the script (set -e)
eval "$exports"
: "${CRON_SECRET:?}" "${DATABASE_URL:?}"
if [ "${DEMO:-0}" = "1" ]; then
  export JOBPROCESSOR_HANDLERS="${JOBPROCESSOR_HANDLERS:+$JOBPROCESSOR_HANDLERS,}jobprocessor.handlers.demo"
fi

flask --app wsgi db upgrade
if [ "${DEMO:-0}" = "1" ]; then flask --app wsgi jobs demo --count 40; fi  # the same 40 however often you start

PORT="${PORT:-8000}"
gunicorn wsgi:app -c gunicorn.conf.py --bind "127.0.0.1:$PORT" &
GUNICORN=$!
trap 'kill $GUNICORN 2>/dev/null; wait $GUNICORN 2>/dev/null' EXIT INT TERM

cat <<TXT

jobprocessor is serving on http://127.0.0.1:$PORT
CRON_SECRET=$CRON_SECRET
Dashboard: http://127.0.0.1:$PORT/dashboard (sign in with DASHBOARD_SECRET from .env)

Try:
  curl -s -X POST http://127.0.0.1:$PORT/jobs -H "Authorization: Bearer \$CRON_SECRET" \\
       -H 'Content-Type: application/json' -d '{"type": "demo.echo", "payload": {"hi": 1}, "store_id": "s1"}'
  curl -s -X POST http://127.0.0.1:$PORT/process-pending -H "Authorization: Bearer \$CRON_SECRET"
  curl -s "http://127.0.0.1:$PORT/jobs?limit=5" -H "Authorization: Bearer \$CRON_SECRET"
(the demo.* types are registered with 'make demo')

A cron tick (POST /process-pending) runs now and then once a minute. Ctrl-C stops gunicorn and the tick;
the embedded PostgreSQL keeps running (another terminal's flask --app wsgi jobs health uses it): make db-stop.
TXT

for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
while kill -0 $GUNICORN 2>/dev/null; do
  echo "[cron $(date -u +%H:%M:%S)] $(curl -s -X POST "http://127.0.0.1:$PORT/process-pending" \
       -H "Authorization: Bearer $CRON_SECRET")"
  sleep 60 & wait $! || true
done
