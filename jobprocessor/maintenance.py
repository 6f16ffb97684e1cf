"""Maintenance as small units, each `run_once(...)` -> counts (River's shape): bounded work, a report of what it did.

    run_due_schedules(engine, settings)
                                     enqueue the recurring jobs whose slot has come; a /process-pending call runs it
                                     when its claim statement reports a schedule due (queries.CLAIM asks, so a call
                                     with nothing to do stays one statement). Expired leases are rescued by the
                                     claim statement itself.
    run_cleanup(engine, settings, budget_s=...)
                                     archive/delete old finished jobs through cleanup_old_jobs(), one batch per short
                                     transaction with its own statement_timeout, until done or the budget is spent,
                                     then the tick history older than JOBS_TICK_HISTORY_DAYS, in batches
                                     (the system.cleanup handler and `flask jobs cleanup`)
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from . import schedules, ticks
from .config import Settings
from .metrics import observe_cleanup, observe_scheduled

log = logging.getLogger("jobprocessor.maintenance")

MIN_BATCH_SIZE = 100


class ScheduleUnit:
    """Enqueue what the recurring-job schedules say is due (at most JOBS_SCHEDULES_PER_RUN per call)."""

    name = "schedules"

    def run_once(self, engine: Engine, settings: Settings) -> dict:
        with engine.begin() as conn:
            return schedules.enqueue_due(conn, settings, limit=settings.JOBS_SCHEDULES_PER_RUN).as_dict()


def run_due_schedules(engine: Engine, settings: Settings) -> dict:
    """The maintenance of one /process-pending call. A failing unit is logged and skipped, never failing the call
    (the jobs it has claimed still run)."""
    counts: dict = {}
    for unit in (ScheduleUnit(),):
        try:
            counts[unit.name] = unit.run_once(engine, settings)
        except Exception:  # maintenance must not stop jobs from running
            log.exception("maintenance unit %s failed; the claim goes on", unit.name)
            counts[unit.name] = {"error": True}
    scheduled = counts.get("schedules", {})
    observe_scheduled(scheduled.get("enqueued", 0))
    if scheduled.get("enqueued") or scheduled.get("invalid") or scheduled.get("error"):
        log.info(json.dumps({"event": "maintenance", **counts}))
    return counts


# --- cleanup ------------------------------------------------------------------------------------------------------

CLEANUP_BATCH = """
SELECT archived, deleted, done
FROM cleanup_old_jobs(CAST(:completed AS interval), CAST(:failed AS interval), CAST(:batch_size AS integer), 1)
"""


@dataclass
class CleanupReport:
    archived: int = 0
    deleted: int = 0
    batches: int = 0
    done: bool = False  # nothing older than the retention is left
    timed_out_batches: int = 0  # batches cancelled by the statement timeout (the batch size was halved after each)
    ticks_deleted: int = 0  # rows of job_ticks older than JOBS_TICK_HISTORY_DAYS
    duration_ms: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class CleanupUnit:
    """One batch of cleanup_old_jobs() in its own short transaction, with a statement timeout."""

    name = "cleanup"

    def __init__(self, completed_older_than: timedelta, failed_older_than: timedelta):
        self.completed_older_than, self.failed_older_than = completed_older_than, failed_older_than

    def run_once(self, engine: Engine, *, batch_size: int, statement_timeout_s: float) -> dict:
        with engine.begin() as conn:
            # SET LOCAL through set_config: the value is a bound parameter, and it ends with the transaction
            conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                         {"ms": str(max(1, int(statement_timeout_s * 1000)))})
            row = conn.execute(text(CLEANUP_BATCH), {
                "completed": self.completed_older_than, "failed": self.failed_older_than, "batch_size": batch_size,
            }).one()
        return {"archived": int(row.archived), "deleted": int(row.deleted), "done": bool(row.done)}


def _is_statement_timeout(exc: OperationalError) -> bool:
    return getattr(exc.orig, "pgcode", None) == "57014"  # query_canceled


def run_cleanup(engine: Engine, settings: Settings, *, budget_s: float,
                completed_older_than: Optional[timedelta] = None, failed_older_than: Optional[timedelta] = None,
                batch_size: Optional[int] = None, max_batches: Optional[int] = None) -> CleanupReport:
    """Cleanup batches until nothing old is left, `max_batches` ran, or `budget_s` seconds are spent; never starts a
    batch it does not expect to finish in time. A batch cancelled by its timeout is rolled back whole (nothing is
    half-moved) and the batch size halves."""
    started = time.monotonic()
    deadline = started + budget_s
    # `is None`, not `or`: a retention of 0 days (timedelta(0), falsy) means "everything finished until now"
    if completed_older_than is None:
        completed_older_than = timedelta(days=settings.JOBS_CLEANUP_KEEP_COMPLETED_DAYS)
    if failed_older_than is None:
        failed_older_than = timedelta(days=settings.JOBS_CLEANUP_KEEP_FAILED_DAYS)
    unit = CleanupUnit(completed_older_than, failed_older_than)
    size = batch_size or settings.JOBS_CLEANUP_BATCH_SIZE
    report = CleanupReport()
    slowest = 0.0
    while max_batches is None or report.batches + report.timed_out_batches < max_batches:
        remaining = deadline - time.monotonic()
        if remaining < max(0.5, 1.5 * slowest):
            break
        timeout = min(settings.JOBS_CLEANUP_STATEMENT_TIMEOUT_S, remaining)
        batch_started = time.monotonic()
        try:
            counts = unit.run_once(engine, batch_size=size, statement_timeout_s=timeout)
        except OperationalError as exc:
            if not _is_statement_timeout(exc):
                raise
            report.timed_out_batches += 1
            log.warning("cleanup batch of %d rows hit its %.1f s statement timeout; halving the batch", size,
                        timeout)
            if size <= MIN_BATCH_SIZE:
                break
            size = max(MIN_BATCH_SIZE, size // 2)
            continue
        slowest = max(slowest, time.monotonic() - batch_started)
        report.archived += counts["archived"]
        report.deleted += counts["deleted"]
        report.batches += 1
        if counts["done"]:
            report.done = True
            break
    if deadline - time.monotonic() > 0.5:
        report.ticks_deleted = ticks.prune(engine, timedelta(days=settings.JOBS_TICK_HISTORY_DAYS))
    report.duration_ms = int((time.monotonic() - started) * 1000)
    log.info(json.dumps({"event": "cleanup", **report.as_dict(), "batch_size": size}))
    observe_cleanup(report.archived, report.deleted)
    return report
