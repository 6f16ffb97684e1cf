"""Prometheus metrics (`GET /metrics`), correct under gunicorn with several workers.

Two kinds of figures:
- Events counted where they happen (jobs claimed/completed/failed/retried by type, handler durations, rescues,
  schedules and cleanup), in this process. Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py) before
  prometheus_client is imported, so every worker writes its values to files there and a scrape, whichever worker
  answers it, sums all of them (prometheus_client's multiprocess mode; dead workers are marked by child_exit).
- State read at scrape time (queue depth and oldest age per status from the job_queue_health view, firing alerts),
  so every worker reports the same truth from the database; plus the collectors other modules register with
  `register_scrape_collector()` — the registration point for the OpenAI rate limiter's figures.

DB pool figures are per process: each process sets its own gauges on every pool checkout/checkin (multiprocess mode
`livesum` adds them up over the live workers; a single process reports its own pool).
"""
from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left
from collections import Counter as Tally
from typing import Callable, Iterable, Optional

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event, text

from . import counts
from sqlalchemy.engine import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JOBS_CLAIMED = Counter("jobprocessor_jobs_claimed_total", "Jobs claimed, by type", ["type"])
JOBS_COMPLETED = Counter("jobprocessor_jobs_completed_total", "Jobs completed, by type", ["type"])
JOBS_FAILED = Counter("jobprocessor_jobs_failed_total", "Jobs failed for good (dead letter), by type", ["type"])
JOBS_RETRIED = Counter("jobprocessor_jobs_retried_total", "Jobs put back to pending to run again (retry or "
                                                           "RetryLater), by type", ["type"])
JOBS_RESCUED = Counter("jobprocessor_jobs_rescued_total", "Running jobs whose lease expired, taken back by a call")
HANDLER_SECONDS = Histogram("jobprocessor_handler_duration_seconds", "Handler run time, by type", ["type"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
JOBS_RELEASED = Counter("jobprocessor_jobs_released_total", "Jobs a call claimed and gave back unstarted (they did "
                                                             "not fit in what was left of its budget), by type",
                        ["type"])
JOBS_ABANDONED = Counter("jobprocessor_jobs_abandoned_total", "Handlers still running past their deadline when their "
                                                              "call answered (recorded late, or rescued), by type",
                         ["type"])
TICKS = Counter("jobprocessor_ticks_total", "/process-pending calls, by result (ran, idle: nothing due, busy: "
                                            "refused, JOBS_MAX_TICKS_PER_PROCESS already running)", ["result"])
TICK_SECONDS = Histogram("jobprocessor_tick_duration_seconds", "How long /process-pending calls ran",
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 90, 120, 300, 600, 900))
SCHEDULED = Counter("jobprocessor_schedule_jobs_enqueued_total", "Jobs enqueued by recurring schedules")
ARCHIVED = Counter("jobprocessor_cleanup_archived_total", "Completed jobs moved to jobs_archive by the cleanup")
DELETED = Counter("jobprocessor_cleanup_deleted_total", "Failed/cancelled jobs deleted by the cleanup")
POOL_SIZE = Gauge("jobprocessor_db_pool_size", "Most connections the pool opens (DB_POOL_MAX, each kept once opened; "
                                               "no overflow), summed over processes", multiprocess_mode="livesum")
POOL_CHECKED_OUT = Gauge("jobprocessor_db_pool_checked_out", "Connections in use, summed over processes",
                         multiprocess_mode="livesum")
POOL_IDLE = Gauge("jobprocessor_db_pool_idle", "Open connections waiting in the pool, summed over processes",
                  multiprocess_mode="livesum")

_KIND_COUNTERS = {"succeeded": JOBS_COMPLETED, "failed": JOBS_FAILED, "retried": JOBS_RETRIED}


# --- observers, called by the processor and the maintenance units ---------------------------------------------------

_children: dict[tuple[int, str], object] = {}


def _child(metric, label: str):
    """metric.labels(label), kept: labels() costs more than the increment itself, and the processor counts every
    job (a child is fork-safe: multiprocess values check their pid)."""
    key = (id(metric), label)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(label)
    return child


def observe_claimed(job_types: Iterable[str], rescued: int) -> None:
    for job_type, count in Tally(job_types).items():
        _child(JOBS_CLAIMED, job_type).inc(count)
    observe_rescued(rescued)


def observe_rescued(rescued: int) -> None:
    if rescued:
        JOBS_RESCUED.inc(rescued)


def observe_outcomes(job_type: str, kinds: dict, seconds: list) -> None:
    """A run of jobs of one type: `kinds` counts its outcomes (kind: succeeded | failed | retried, processor._kind)
    and `seconds` are their handler times. The same figures as one observation per job, written once per counter
    and bucket: in multiprocess mode (gunicorn) each write is a locked write to a shared file, and a run of
    microsecond jobs spent more time counting them than running them."""
    for kind, n in kinds.items():
        counter = _KIND_COUNTERS.get(kind)
        if counter is not None and n:
            _child(counter, job_type).inc(n)
    histogram = _child(HANDLER_SECONDS, job_type)
    bounds, buckets, total = getattr(histogram, "_upper_bounds", None), getattr(histogram, "_buckets", None), \
        getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in seconds:  # not the layout this was written against: one observation at a time
            histogram.observe(value)
        return
    per_bucket = [0] * len(bounds)
    for value in seconds:
        per_bucket[bisect_left(bounds, value)] += 1  # the first bound >= value, as Histogram.observe picks it
    for i, n in enumerate(per_bucket):
        if n:
            buckets[i].inc(n)
    total.inc(math.fsum(seconds))


def observe_released(job_type: str) -> None:
    _child(JOBS_RELEASED, job_type).inc()


def observe_abandoned(job_type: str) -> None:
    JOBS_ABANDONED.labels(job_type).inc()


def observe_tick(result: str, seconds: float) -> None:
    TICKS.labels(result).inc()
    TICK_SECONDS.observe(seconds)


def observe_scheduled(enqueued: int) -> None:
    if enqueued:
        SCHEDULED.inc(enqueued)


def observe_cleanup(archived: int, deleted: int) -> None:
    if archived:
        ARCHIVED.inc(archived)
    if deleted:
        DELETED.inc(deleted)


# --- DB pool --------------------------------------------------------------------------------------------------------

def _update_pool_gauges(pool, returning: int = 0) -> None:
    """`returning`: connections being checked in right now (the checkin event fires before the pool takes the
    connection back, so the pool still counts it as checked out)."""
    try:
        POOL_SIZE.set(pool.size())
        POOL_CHECKED_OUT.set(max(0, pool.checkedout() - returning))
        POOL_IDLE.set(pool.checkedin() + returning)
    except AttributeError:  # a pool class without these figures (NullPool, StaticPool): nothing to report
        pass


def instrument_pool(engine: Engine) -> None:
    """Keep this process's pool gauges current: set on every checkout and checkin (a few memory writes)."""
    if getattr(engine, "_jobprocessor_pool_metrics", False):
        return
    engine._jobprocessor_pool_metrics = True

    # engine.pool, not a captured pool: engine.dispose() puts a new pool in place (the listeners carry over)
    def refresh(*_args) -> None:
        _update_pool_gauges(engine.pool)

    def returned(*_args) -> None:
        _update_pool_gauges(engine.pool, returning=1)

    for name in ("connect", "checkout", "close", "invalidate"):
        event.listen(engine.pool, name, refresh)
    event.listen(engine.pool, "checkin", returned)
    refresh()


# --- state read at scrape time --------------------------------------------------------------------------------------

ScrapeCollector = Callable[[], Iterable[Metric]]
_scrape_collectors: list[ScrapeCollector] = []
_scrape_lock = threading.Lock()


def register_scrape_collector(collect: ScrapeCollector) -> ScrapeCollector:
    """Registration point for figures read at scrape time, e.g. the OpenAI rate limiter's (its state lives in
    PostgreSQL, shared by all processes, so reading it once per scrape is right in any worker):

        from prometheus_client.core import GaugeMetricFamily
        from jobprocessor.metrics import register_scrape_collector

        @register_scrape_collector
        def limiter_metrics():
            stats = ratelimit.stats(db.engine)          # used/limit per window, waiting jobs
            g = GaugeMetricFamily("jobprocessor_ratelimit_used", "Budget used in the window", labels=["window"])
            g.add_metric(["rpm"], stats.rpm_used); g.add_metric(["tpm"], stats.tpm_used)
            yield g

    `collect()` runs inside the app context of the /metrics request; a collector that raises is skipped (and the
    scrape says so in jobprocessor_scrape_collector_errors). Registering the same function twice is a no-op."""
    with _scrape_lock:
        if collect not in _scrape_collectors:
            _scrape_collectors.append(collect)
    return collect


def unregister_scrape_collector(collect: ScrapeCollector) -> None:
    with _scrape_lock:
        if collect in _scrape_collectors:
            _scrape_collectors.remove(collect)


QUEUE_HEALTH = "SELECT status, count, oldest_age_seconds, avg_duration_seconds FROM job_queue_health"
QUEUE_ALERTS = "SELECT alert, severity FROM job_queue_alerts"
LAST_TICK = "SELECT extract(epoch FROM now() - max(started_at)) AS age_s FROM job_ticks"  # job_ticks_started_idx
# the backlog is exact up to this many due jobs (past the alerts' critical default), estimated beyond
DUE_COUNT_CAP = 100_000


STORE_LAG_STORES = 5  # the stores whose oldest due job has waited longest, exported one series each


def queue_metrics(engine: Engine) -> list[Metric]:
    """Queue depth and ages per status (waiting/pending/running: all; finished: last 24 h), firing alerts, and the
    oldest wait of the stores that have waited longest."""
    from .flow.lag import worst_stores

    jobs = GaugeMetricFamily("jobprocessor_queue_jobs", "Jobs per status (waiting/pending/running: all of "
                                                        "them; finished statuses: finished in the last 24 h)",
                             labels=["status"])
    oldest = GaugeMetricFamily("jobprocessor_queue_oldest_age_seconds", "Age of the oldest job per status (created_at)",
                               labels=["status"])
    duration = GaugeMetricFamily("jobprocessor_queue_avg_duration_seconds", "Average run time per status (see "
                                                                            "job_queue_health)", labels=["status"])
    alerts = GaugeMetricFamily("jobprocessor_queue_alerts_firing", "Alerts of job_queue_alerts firing now (1)",
                               labels=["alert", "severity"])
    with engine.connect() as conn:
        for row in conn.execute(text(QUEUE_HEALTH)):
            jobs.add_metric([row.status], float(row.count))
            oldest.add_metric([row.status], float(row.oldest_age_seconds or 0))
            duration.add_metric([row.status], float(row.avg_duration_seconds or 0))
        for row in conn.execute(text(QUEUE_ALERTS)):
            alerts.add_metric([row.alert, row.severity], 1.0)
        last_tick = conn.execute(text(LAST_TICK)).scalar()
        due = counts.bounded_count(conn, counts.DUE, cap=DUE_COUNT_CAP)
        oldest_due = counts.oldest_due_wait_s(conn)
        lagging = worst_stores(conn, STORE_LAG_STORES)
    store_lag = GaugeMetricFamily("jobprocessor_store_oldest_wait_seconds",
                                  f"Seconds the oldest due job of each of the {STORE_LAG_STORES} stores that have "
                                  "waited longest has waited since its run_at (store_id \"\": jobs without a "
                                  "store; stores paused as a whole are left out)", labels=["store_id"])
    for row in lagging:
        store_lag.add_metric([row["store_id"] or ""], float(row["wait_s"]))
    families = [jobs, oldest, duration, alerts, store_lag,
                GaugeMetricFamily("jobprocessor_queue_due_jobs", "Pending jobs whose run_at has come (the backlog; "
                                  f"the planner's estimate above {DUE_COUNT_CAP})", value=float(due.n)),
                GaugeMetricFamily("jobprocessor_queue_oldest_due_wait_seconds", "How long the oldest due pending "
                                  "job has waited since its run_at (0: none due)", value=float(oldest_due or 0))]
    if last_tick is not None:
        families.append(GaugeMetricFamily("jobprocessor_last_tick_age_seconds", "Seconds since the last "
                                          "/process-pending call started (any process, any instance)",
                                          value=float(last_tick)))
    return families


class _ScrapeTime:
    """A collector for one scrape: the DB-derived figures and the registered collectors."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        yield from queue_metrics(self.engine)
        errors = GaugeMetricFamily("jobprocessor_scrape_collector_errors", "Registered scrape collectors that "
                                                                           "raised during this scrape")
        failed = 0
        with _scrape_lock:
            collectors = list(_scrape_collectors)
        for collect in collectors:
            try:
                yield from list(collect())
            except Exception:  # noqa: BLE001 - one broken collector must not hide the others
                failed += 1
        errors.add_metric([], failed)
        yield errors


def multiprocess_dir() -> Optional[str]:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def render(engine: Engine) -> bytes:
    """The text of one scrape: this process's (or, under gunicorn, all workers') counters + the scrape-time state."""
    _update_pool_gauges(engine.pool)
    if multiprocess_dir():
        events = CollectorRegistry()
        MultiProcessCollector(events)
        head = generate_latest(events)
    else:
        head = generate_latest(REGISTRY)
    scrape = CollectorRegistry()
    scrape.register(_ScrapeTime(engine))
    return head + generate_latest(scrape)
