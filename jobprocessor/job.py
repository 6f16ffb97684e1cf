"""What a job is, below every other module: what a handler receives (`Job`), what it may raise (`RetryLater`,
`PermanentError`) and what enqueueing refuses (`InvalidJob`, raised by enqueue.py and workflows/write.py); the
statuses a job goes through.

Handlers, the processor, the shared limiter, enqueueing and the workflows all use these, so this module imports
nothing of jobprocessor's: dependencies point one way, towards it (tests/test_layers.py checks). Users import the
first three from `jobprocessor.handlers` (README, "Writing handlers") and InvalidJob from `jobprocessor.enqueue`,
which re-export them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

# every status a job can have, in the order of its life; the CHECK constraint jobs_status_check of sql/ allows the
# same (tests/test_job_statuses.py compares them)
JOB_STATUSES = ("waiting", "pending", "running", "completed", "failed", "cancelled")
FINISHED_STATUSES = ("completed", "failed", "cancelled")  # final: nothing more will happen to these jobs

MAX_RETRY_LATER_S = 365 * 24 * 3600.0


class RetryLater(Exception):
    """Run the job again after `seconds`, without spending an attempt (rate limits, a busy upstream)."""

    def __init__(self, seconds: float, reason: str = ""):
        super().__init__(reason or f"retry in {seconds:g}s")
        seconds = float(seconds)
        # NaN means "now"; beyond a year (or infinity) is capped: the delay becomes an interval in PostgreSQL
        self.seconds = min(max(0.0, seconds), MAX_RETRY_LATER_S) if seconds == seconds else 0.0
        self.reason = reason


class PermanentError(Exception):
    """Fail the job now, with no retry: the error will not change by trying again."""


@dataclass
class Job:
    """What a handler receives. `deadline` is when the handler must be done (UTC); `time_left()` in seconds;
    `step(name, fn)` runs fn once per job and keeps its JSON result (jobprocessor/workflows/steps.py)."""

    id: int
    type: str
    payload: Any
    store_id: Optional[str]
    user_id: Optional[str]
    priority: int
    attempts: int
    max_attempts: int
    batch_id: Optional[str]
    deferrals: int = 0  # times it was put off without spending an attempt (RetryLater, cut by a budget's end)
    deadline: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _deadline_monotonic: float = field(default=0.0, repr=False)
    _steps: Any = field(default=None, repr=False)  # a workflows.steps.StepStore, set by the processor

    def set_deadline(self, seconds_from_now: float) -> None:
        self._deadline_monotonic = time.monotonic() + seconds_from_now
        self.deadline = datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)

    def time_left(self) -> float:
        return max(0.0, self._deadline_monotonic - time.monotonic())

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn()` once for this job and keep its result (JSON): a later run of the job (after a crash, a budget
        cut, a retry) gets the kept result back instead of running fn again. Returns the result as stored."""
        if self._steps is None:
            raise RuntimeError("job.step() needs a job run by the processor (no step store is attached)")
        return self._steps.run(name, fn)


_UNREAD = object()


class StartedJob(Job):
    """The Job the processor hands a handler (executor.job_from_row): the same fields and methods, but made with
    no per-job work a handler may never need: `payload` is decoded from the claim's JSON text when first read, and
    `deadline` (UTC) is worked out from the monotonic deadline when first read. Assigning either works as on Job."""

    @classmethod
    def of_claim(cls, *, payload_json: Optional[str], deadline_monotonic: float, **fields: Any) -> "StartedJob":
        job = cls.__new__(cls)
        job.__dict__.update(fields, _payload=_UNREAD, _payload_json=payload_json, _deadline=None,
                            _deadline_monotonic=deadline_monotonic)
        return job

    @property
    def payload(self) -> Any:
        value = self.__dict__.get("_payload", _UNREAD)
        if value is _UNREAD:
            document = self.__dict__.get("_payload_json")
            value = self._payload = None if document is None else json.loads(document)
        return value

    @payload.setter
    def payload(self, value: Any) -> None:
        self._payload = value

    @property
    def deadline(self) -> datetime:
        value = self.__dict__.get("_deadline")
        if value is None:
            left = self._deadline_monotonic - time.monotonic()
            value = self._deadline = datetime.now(timezone.utc) + timedelta(seconds=left)
        return value

    @deadline.setter
    def deadline(self, value: datetime) -> None:
        self._deadline = value


class InvalidJob(ValueError):
    """A job that cannot be enqueued. `field` names the culprit; status is the HTTP status it maps to."""

    def __init__(self, field: str, message: str, status: int = 400, index: Optional[int] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.field, self.message, self.status, self.index, self.code = field, message, status, index, code
