"""Built-in `system.cleanup`: the cleaner (jobprocessor/maintenance/cleaner.py) within the job's deadline.

Run daily at 03:00 UTC by the shipped schedule (sql/053_job_schedules_v1.sql). Payload, all optional:
`completed_older_than_days`, `failed_older_than_days` (default JOBS_CLEANUP_KEEP_*_DAYS), `batch_size` (default
JOBS_CLEANUP_BATCH_SIZE). Result: {"archived", "deleted", "batches", "done", "timed_out_batches", "duration_ms"}.
When the deadline comes before the old rows are gone (a first run over years of history), the job asks to run again
in CONTINUE_AFTER_S seconds (RetryLater: no attempt spent) and carries on from where it stopped.
"""
from __future__ import annotations

from datetime import timedelta

from flask import current_app

from ..extensions import db
from ..handler_registry import handler
from ..job import PermanentError, RetryLater
from ..maintenance.cleaner import Cleaner, CleanerConfig

CONTINUE_AFTER_S = 30.0
SAFETY_S = 1.0  # stop starting batches this long before the deadline


def _days(payload: dict, key: str):
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 36500:
        raise PermanentError(f"payload {key} must be a number of days from 0 to 36500")
    return timedelta(days=value)


@handler("system.cleanup", max_attempts=3, timeout_s=600)
def cleanup(job):
    payload = job.payload or {}
    batch_size = payload.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or not 100 <= batch_size <= 1000000):
        raise PermanentError("payload batch_size must be a whole number from 100 to 1000000")
    settings = current_app.extensions["jobprocessor"].settings
    config = CleanerConfig.from_settings(settings, completed_older_than=_days(payload, "completed_older_than_days"),
                                         failed_older_than=_days(payload, "failed_older_than_days"),
                                         batch_size=batch_size)
    report = Cleaner(db.engine, config).run_once(budget_s=max(0.0, job.time_left() - SAFETY_S))
    if not report.done:
        raise RetryLater(CONTINUE_AFTER_S, f"cleanup continues: archived {report.archived}, deleted "
                                           f"{report.deleted} in {report.batches} batches before the deadline")
    return report.as_dict()
