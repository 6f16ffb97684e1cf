"""Handler registration: `@handler("type", max_attempts=..., timeout_s=...)`. What a handler receives and may raise
is in jobprocessor/job.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .job import Job


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    func: Callable[[Job], Any]
    max_attempts: Optional[int] = None  # None: the service default (JOBS_DEFAULT_MAX_ATTEMPTS)
    timeout_s: Optional[float] = None  # None: the service default (JOBS_DEFAULT_TIMEOUT_S)
    # checks a payload at enqueue (raising PermanentError: the API answers 422) so a job that can never work is
    # refused up front instead of failing later; the handler should run the same check itself
    validate_payload: Optional[Callable[[Any], Any]] = None
    # the shared rate limit its calls pass (e.g. "openai"): such a type is I/O-bound, and a call runs as many of
    # its jobs at once as that rate and their observed latency need (its own lane of threads), not JOBS_CONCURRENCY
    rate_limited: Optional[str] = None


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
