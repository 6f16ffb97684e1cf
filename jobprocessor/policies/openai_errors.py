"""What a failed OpenAI call means for its job. Pure.

    429 rate_limit_exceeded        THROTTLED  RetryLater after Retry-After; no attempt spent; every caller holds
    429 insufficient_quota         RETRY      billing, not pace: retried with backoff, fails when attempts run out
    5xx                            SERVER     RetryLater with a backoff shared by all processes; no attempt spent
    408, 409                       RETRY      transient on the server's own word
    other 4xx (400 bad request, 401 auth, 403, 404 model, 422)
                                   PERMANENT  the same request fails the same way: the job fails now
"""
from __future__ import annotations

import random
from typing import Optional

from .backoff import retry_delay

THROTTLED = "throttled"
SERVER = "server_error"
RETRY = "retry"
PERMANENT = "permanent"

THROTTLE_FALLBACK_S = 2.0  # a 429 without Retry-After: the job's delay, and how long the shared limiter holds everyone
SERVER_BACKOFF_BASE_S = 5.0
SERVER_BACKOFF_CAP_S = 600.0


def classify_status(status: int, code: Optional[str] = None) -> str:
    if status == 429:
        return RETRY if code == "insufficient_quota" else THROTTLED
    if status >= 500:
        return SERVER
    if status in (408, 409):
        return RETRY
    if 400 <= status < 500:
        return PERMANENT
    return RETRY


def throttle_delay(retry_after_s: Optional[float], u: Optional[float] = None) -> float:
    """When to run a throttled job again: the server's Retry-After (or a short default), plus up to 20 % so the
    throttled jobs do not return in one wave."""
    base = retry_after_s if retry_after_s is not None and retry_after_s >= 0 else THROTTLE_FALLBACK_S
    return max(0.5, base) * (1.0 + 0.2 * (random.random() if u is None else u))


def server_error_delay(streak: int, retry_after_s: Optional[float] = None, u: Optional[float] = None) -> float:
    """When to run a job again after a 5xx: Retry-After when the server gives one, else an exponential backoff on
    the number of consecutive server errors every process has seen (2.5-5 s, 5-10 s, ... up to 5-10 min)."""
    if retry_after_s is not None and retry_after_s >= 0:
        return max(0.5, retry_after_s)
    return retry_delay(max(1, streak), u, base_s=SERVER_BACKOFF_BASE_S, cap_s=SERVER_BACKOFF_CAP_S)
