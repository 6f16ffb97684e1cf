"""The shared limiter as a handler uses it: acquire a slot (sleep briefly for it, or reschedule the job), call,
settle.

    limiter = SharedLimiter.for_app()
    grant = limiter.acquire(job, charged_tokens)        # may sleep; may raise RetryLater or PermanentError
    ... one HTTP call ...
    figures = limiter.settle(grant, Settlement(...))    # the stats after it, for the call's log line
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Optional

from sqlalchemy.exc import SQLAlchemyError

from ..handlers.registry import Job, PermanentError, RetryLater
from . import core
from .core import Limits, Reservation, Settlement
from .store import DEFAULT_NAME, LimiterStore

MAX_INLINE_WAIT_S = 10.0  # a job sleeps at most this long for its slot inside a call; longer: rescheduled
MIN_CALL_S = 5.0  # a job does not start a call with less than this much of its deadline left
MIN_RESCHEDULE_S = 1.0
UNAVAILABLE_RETRY_S = 5.0  # the limiter's database could not be reached: try again this much later
RESCHEDULE_JITTER = 0.2  # rescheduled jobs spread over +20 % so they do not all come back in the same instant


@dataclass(frozen=True)
class Grant:
    reservation: Reservation
    waited_s: float
    job_id: Optional[int]


class SharedLimiter:
    def __init__(self, store: LimiterStore, limits: Limits):
        self.store, self.limits = store, limits

    @classmethod
    def for_app(cls, name: str = DEFAULT_NAME) -> "SharedLimiter":
        """The current app's limiter (OPENAI_RPM / OPENAI_TPM) on its database engine; needs an app context."""
        from flask import current_app

        from ..extensions import db

        settings = current_app.extensions["jobprocessor"].settings
        return cls(LimiterStore(db.engine, name), Limits(settings.OPENAI_RPM, settings.OPENAI_TPM))

    def acquire(self, job: Job, tokens: int, min_call_s: float = MIN_CALL_S) -> Grant:
        """Reserve one request and `tokens` (what the server will count for the call) for `job`'s next call.
        Sleeps until the slot when that is short and leaves `min_call_s` of the job's deadline for the call;
        otherwise raises RetryLater for when the budget refills (no attempt spent)."""
        if not self.limits.fits(tokens):
            raise PermanentError(f"this call counts {tokens} tokens, more than the whole per-minute budget "
                                 f"(OPENAI_TPM={self.limits.tpm}); it can never be sent")
        max_wait = core.max_inline_wait(job.time_left(), MAX_INLINE_WAIT_S, min_call_s)
        if max_wait < 0:  # too little of the deadline left for a call: run again soon, with a fresh deadline
            raise RetryLater(MIN_RESCHEDULE_S, f"rate limiter: less than {min_call_s:g}s of the job's deadline "
                                               "left for the call; rescheduled")
        try:
            decision = self.store.reserve(self.limits, tokens, max_wait_s=max_wait, job_id=job.id)
        except SQLAlchemyError as exc:  # pool exhausted, database restarting: nothing was sent, so no attempt spent
            raise RetryLater(UNAVAILABLE_RETRY_S, f"rate limiter unavailable ({type(exc).__name__}); "
                                                  "rescheduled") from None
        if not decision.granted:
            delay = max(MIN_RESCHEDULE_S, decision.wait_s) * (1.0 + RESCHEDULE_JITTER * random.random())
            raise RetryLater(delay, f"rate limiter: the shared OpenAI budget ({self.limits.rpm} requests/min, "
                                    f"{self.limits.tpm} tokens/min) has room for this call in "
                                    f"{decision.wait_s:.1f}s; rescheduled")
        if decision.wait_s > 0:
            time.sleep(decision.wait_s)
        return Grant(decision.reservation, decision.wait_s, job.id)

    def settle(self, grant: Grant, outcome: Settlement) -> dict:
        return self.store.settle(self.limits, grant.reservation, outcome, job_id=grant.job_id)

    def release(self, grant: Grant) -> dict:
        """Give a grant back unused (no request was sent)."""
        return self.settle(grant, Settlement(sent=False, used_tokens=0))

    def stats(self) -> dict:
        return self.store.stats(self.limits)
