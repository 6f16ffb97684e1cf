#!/usr/bin/env bash
# make run: embedded PostgreSQL (unless DATABASE_URL is set), migrations, a secret in .env, gunicorn on
# 127.0.0.1:8000, and a tick of POST /process-pending every minute, as an external cron would send it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

if [ -f .env ]; then set -a; . ./.env; set +a; fi
if [ -z "${CRON_SECRET:-}" ]; then
  CRON_SECRET="$($PY -c 'import secrets; print(secrets.token_urlsafe(32))')"
  echo "CRON_SECRET=$CRON_SECRET" >> .env
  echo "Generated a CRON_SECRET into .env"
fi
export CRON_SECRET
# the dashboard: an operators' secret and the key that signs its session cookies (kept in .env like CRON_SECRET)
for name in DASHBOARD_SECRET DASHBOARD_SESSION_KEY; do
  if [ -z "${!name:-}" ]; then
    value="$($PY -c 'import secrets; print(secrets.token_urlsafe(32))')"
    echo "$name=$value" >> .env
    printf -v "$name" '%s' "$value"
    echo "Generated a $name into .env"
  fi
  export "${name?}"
done
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL="$($PY -m jobprocessor.devdb start jobprocessor)"
  echo "Embedded PostgreSQL: $DATABASE_URL (data in .pgdata/)"
fi
export DATABASE_URL
if [ "${DEMO:-0}" = "1" ]; then
  export JOBPROCESSOR_HANDLERS="${JOBPROCESSOR_HANDLERS:+$JOBPROCESSOR_HANDLERS,}jobprocessor.handlers.demo"
fi

flask --app wsgi db upgrade
if [ "${DEMO:-0}" = "1" ]; then flask --app wsgi jobs demo --count 40; fi

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

A cron tick (POST /process-pending) runs now and then once a minute. Ctrl-C stops.
TXT

for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
while kill -0 $GUNICORN 2>/dev/null; do
  echo "[cron $(date -u +%H:%M:%S)] $(curl -s -X POST "http://127.0.0.1:$PORT/process-pending" \
       -H "Authorization: Bearer $CRON_SECRET")"
  sleep 60 & wait $! || true
done
