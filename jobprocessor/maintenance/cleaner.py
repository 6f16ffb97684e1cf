"""The cleaner: old finished jobs leave the hot table in batches — completed ones are archived (jobs_archive),
failed and cancelled ones deleted (the SQL function cleanup_old_jobs(), through queries.cleanup_batch) — each batch
in its own short transaction under its own statement_timeout; then the tick history and the action log older than
their retention are pruned (jobprocessor/ticks.py owns job_ticks, bulk/log.py job_actions)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from .. import queries, ticks
from ..bulk import log as action_log
from ..config import Settings
from ..metrics import observe_cleanup
from .config_check import not_negative, positive_int, positive_seconds

log = logging.getLogger("jobprocessor.maintenance")

MIN_BATCH_SIZE = 100  # a batch that times out halves, down to this


@dataclass(frozen=True)
class CleanerConfig:
    completed_older_than: timedelta  # JOBS_CLEANUP_KEEP_COMPLETED_DAYS: completed jobs older than this are archived
    failed_older_than: timedelta  # JOBS_CLEANUP_KEEP_FAILED_DAYS: failed and cancelled ones older are deleted
    batch_size: int = 10000  # JOBS_CLEANUP_BATCH_SIZE: rows per batch (one transaction each)
    statement_timeout_s: float = 30.0  # JOBS_CLEANUP_STATEMENT_TIMEOUT_S: one batch's statement_timeout
    tick_history: timedelta = timedelta(days=7)  # JOBS_TICK_HISTORY_DAYS: job_ticks kept
    action_log: timedelta = timedelta(days=365)  # JOBS_ACTION_LOG_DAYS: finished job_actions entries kept

    def __post_init__(self):
        not_negative("completed_older_than", self.completed_older_than)
        not_negative("failed_older_than", self.failed_older_than)
        not_negative("tick_history", self.tick_history)
        not_negative("action_log", self.action_log)
        positive_int("batch_size", self.batch_size, MIN_BATCH_SIZE)
        positive_seconds("statement_timeout_s", self.statement_timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, *, completed_older_than: Optional[timedelta] = None,
                      failed_older_than: Optional[timedelta] = None,
                      batch_size: Optional[int] = None) -> "CleanerConfig":
        """The settings, with what a caller (the system.cleanup payload, the CLI's options) overrides."""
        # `is None`, not `or`: a retention of 0 days (timedelta(0), falsy) means "everything finished until now"
        return cls(
            completed_older_than=(timedelta(days=settings.JOBS_CLEANUP_KEEP_COMPLETED_DAYS)
                                  if completed_older_than is None else completed_older_than),
            failed_older_than=(timedelta(days=settings.JOBS_CLEANUP_KEEP_FAILED_DAYS)
                               if failed_older_than is None else failed_older_than),
            batch_size=settings.JOBS_CLEANUP_BATCH_SIZE if batch_size is None else batch_size,
            statement_timeout_s=settings.JOBS_CLEANUP_STATEMENT_TIMEOUT_S,
            tick_history=timedelta(days=settings.JOBS_TICK_HISTORY_DAYS),
            action_log=timedelta(days=settings.JOBS_ACTION_LOG_DAYS))


@dataclass(frozen=True)
class CleanerResult:
    archived: int = 0
    deleted: int = 0
    batches: int = 0
    done: bool = False  # nothing older than the retention is left
    timed_out_batches: int = 0  # batches cancelled by the statement timeout (the batch size was halved after each)
    ticks_deleted: int = 0  # rows of job_ticks older than the tick history's retention
    actions_deleted: int = 0  # finished entries of job_actions older than the action log's retention
    duration_ms: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _is_statement_timeout(exc: OperationalError) -> bool:
    return getattr(exc.orig, "pgcode", None) == "57014"  # query_canceled


class Cleaner:
    name = "cleaner"

    def __init__(self, engine: Engine, config: CleanerConfig):
        self.engine, self.config = engine, config

    def run_once(self, *, budget_s: float, max_batches: Optional[int] = None) -> CleanerResult:
        """Batches until nothing old is left, `max_batches` ran, or `budget_s` seconds are spent; never starts a
        batch it does not expect to finish in time. A batch cancelled by its timeout is rolled back whole (nothing
        is half-moved) and the batch size halves."""
        started = time.monotonic()
        deadline = started + budget_s
        size = self.config.batch_size
        result = CleanerResult()
        slowest = 0.0
        while max_batches is None or result.batches + result.timed_out_batches < max_batches:
            remaining = deadline - time.monotonic()
            if remaining < max(0.5, 1.5 * slowest):
                break
            timeout = min(self.config.statement_timeout_s, remaining)
            batch_started = time.monotonic()
            try:
                with self.engine.begin() as conn:
                    archived, deleted, done = queries.cleanup_batch(
                        conn, completed_older_than=self.config.completed_older_than,
                        failed_older_than=self.config.failed_older_than, batch_size=size, statement_timeout_s=timeout)
            except OperationalError as exc:
                if not _is_statement_timeout(exc):
                    raise
                result = replace(result, timed_out_batches=result.timed_out_batches + 1)
                log.warning("cleanup batch of %d rows hit its %.1f s statement timeout; halving the batch", size,
                            timeout)
                if size <= MIN_BATCH_SIZE:
                    break
                size = max(MIN_BATCH_SIZE, size // 2)
                continue
            slowest = max(slowest, time.monotonic() - batch_started)
            result = replace(result, archived=result.archived + archived, deleted=result.deleted + deleted,
                             batches=result.batches + 1, done=done)
            if done:
                break
        if deadline - time.monotonic() > 0.5:
            result = replace(result, ticks_deleted=ticks.prune(self.engine, self.config.tick_history))
        if deadline - time.monotonic() > 0.5:
            result = replace(result, actions_deleted=action_log.prune(self.engine, self.config.action_log))
        result = replace(result, duration_ms=int((time.monotonic() - started) * 1000))
        log.info(json.dumps({"event": "cleanup", **result.as_dict(), "batch_size": size}))
        observe_cleanup(result.archived, result.deleted)
        return result
