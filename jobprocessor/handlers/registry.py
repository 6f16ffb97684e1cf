"""Handler registration: `@handler("type", max_attempts=..., timeout_s=...)`, and what a handler may raise."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional


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


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    func: Callable[["Job"], Any]
    max_attempts: Optional[int] = None  # None: the service default (JOBS_DEFAULT_MAX_ATTEMPTS)
    timeout_s: Optional[float] = None  # None: the service default (JOBS_DEFAULT_TIMEOUT_S)
    # checks a payload at enqueue (raising PermanentError: the API answers 422) so a job that can never work is
    # refused up front instead of failing later; the handler should run the same check itself
    validate_payload: Optional[Callable[[Any], Any]] = None
    # the shared rate limit its calls pass (e.g. "openai"): such a type is I/O-bound, and a call runs as many of
    # its jobs at once as that rate and their observed latency need (its own lane of threads), not JOBS_CONCURRENCY
    rate_limited: Optional[str] = None


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


_registry: dict[str, HandlerSpec] = {}


RATE_LIMITS = ("openai",)  # the shared limits a handler may declare (jobprocessor/ratelimit)


def handler(job_type: str, *, max_attempts: Optional[int] = None, timeout_s: Optional[float] = None,
            validate_payload: Optional[Callable[[Any], Any]] = None, rate_limited: Optional[str] = None):
    """Register the decorated function as the handler of `job_type`."""
    if not isinstance(job_type, str) or not job_type or len(job_type) > 200:
        raise ValueError("job type must be a non-empty string of at most 200 characters")
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise ValueError("max_attempts must be between 1 and 100")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    if rate_limited is not None and rate_limited not in RATE_LIMITS:
        raise ValueError(f"rate_limited must be one of {', '.join(RATE_LIMITS)}")

    def register(func: Callable[[Job], Any]) -> Callable[[Job], Any]:
        existing = _registry.get(job_type)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"a handler for {job_type!r} is already registered ({existing.func.__qualname__})")
        _registry[job_type] = HandlerSpec(job_type, func, max_attempts, timeout_s, validate_payload, rate_limited)
        return func

    return register


def get_handler(job_type: str) -> Optional[HandlerSpec]:
    return _registry.get(job_type)


def registered_types() -> list[str]:
    return sorted(_registry)


def unregister(job_type: str) -> None:
    """For tests that register throw-away handlers."""
    _registry.pop(job_type, None)
