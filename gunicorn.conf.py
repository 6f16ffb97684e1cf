"""gunicorn settings for an I/O-bound endpoint: a few processes, each with threads.

A /process-pending call mostly waits (on PostgreSQL, on handlers calling APIs), so threads serve concurrent cron
callers cheaply; handlers themselves run on the call's own pool of JOBS_CONCURRENCY threads.
"""
import os

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A call may run up to budget_s (<= 900 s) plus a short grace; gthread workers heartbeat from their main loop, so
# this only bounds a worker whose main loop is stuck. graceful_timeout lets running calls finish on deploys.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "960"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "60"))
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log
# the access log never includes request headers, so the Authorization secret never reaches it
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
