"""gunicorn settings for an I/O-bound endpoint: a few processes, each with threads.

A /process-pending call mostly waits (on PostgreSQL, on handlers calling APIs), so threads serve concurrent cron
callers cheaply; handlers themselves run on the call's own pool of JOBS_CONCURRENCY threads.
"""
import os

from jobprocessor.startup import gunicorn_numbers

_numbers = gunicorn_numbers(os.environ)  # a bad value: one line naming it, and gunicorn does not start
bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{_numbers['port']}")
workers = _numbers["workers"]
worker_class = "gthread"
threads = _numbers["threads"]
# A call may run up to budget_s (<= 900 s) plus a short grace; gthread workers heartbeat from their main loop, so
# this only bounds a worker whose main loop is stuck. graceful_timeout lets running calls finish on deploys.
timeout = _numbers["timeout"]
graceful_timeout = _numbers["graceful_timeout"]
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log
# time, client, method, path (never the query string: a caller may put a secret in ?secret=, and parameters are not
# the log's business), protocol, status, bytes, seconds. Request headers are never logged, so neither is
# the Authorization secret.
access_log_format = '%(t)s %(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'

# gunicorn's own refusals (bad request line, too many headers, ...) as JSON errors like the app's
from jobprocessor import gunicorn_errors  # noqa: E402

gunicorn_errors.install()

# --- Prometheus multiprocess mode (GET /metrics sums every worker's counters) -------------------------------------
# Each worker writes its metric values into files in PROMETHEUS_MULTIPROC_DIR; a scrape, whichever worker answers,
# reads all of them. The variable must be set before prometheus_client is first imported, i.e. here in the master,
# before the workers load the app. Without one we make a private directory per master; a given directory is emptied
# at start, since files left by a previous run would be counted again.
import shutil  # noqa: E402
import tempfile  # noqa: E402

_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="jobprocessor-metrics-")


# The app's settings, checked here in the master before any worker boots (each worker reads them again)
from jobprocessor.startup import check_or_exit  # noqa: E402

check_or_exit(os.environ, threads=threads)


def on_starting(server):
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def post_worker_init(worker):
    # DB_POOL_MIN connections open before the worker's first request (the pool keeps them, and any it opens later)
    from jobprocessor import warm_pool

    warm_pool(worker.wsgi)


def child_exit(server, worker):
    # a dead worker's live gauges (DB pool figures) stop counting; its counters keep their totals
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
