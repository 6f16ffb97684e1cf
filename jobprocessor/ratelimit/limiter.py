"""The shared limiter as a handler uses it: acquire a slot (sleep briefly for it, or reschedule the job), call,
settle. A job of a store with an OpenAI token quota (openai_tokens_per_minute) also reserves on its store's quota
first (store_quota.py): no room there soon, and the job is rescheduled without spending an attempt.

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

from ..job import Job, PermanentError, RetryLater
from . import core
from .core import Limits, Reservation, Settlement
from .store import DEFAULT_NAME, LimiterStore
from .store_quota import QUOTA_INLINE_WAIT_S, StoreGrant, StoreQuotas

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
    store: Optional[StoreGrant] = None  # what the call reserved on its store's token quota (None: no quota)


def _delay(wait_s: float) -> float:
    """When a refused call's job comes back: when the budget has room, spread by up to +20 %."""
    return max(MIN_RESCHEDULE_S, wait_s) * (1.0 + RESCHEDULE_JITTER * random.random())


class SharedLimiter:
    def __init__(self, store: LimiterStore, limits: Limits, quotas: Optional[StoreQuotas] = None):
        self.store, self.limits = store, limits
        self.quotas = quotas if quotas is not None else StoreQuotas(store.engine, limits.rpm)

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
            quota, refused = self.quotas.reserve(job.store_id, job.type, tokens, min(max_wait, QUOTA_INLINE_WAIT_S))
        except SQLAlchemyError as exc:
            raise RetryLater(UNAVAILABLE_RETRY_S, f"rate limiter unavailable ({type(exc).__name__}); "
                                                  "rescheduled") from None
        if refused is not None:
            raise RetryLater(_delay(refused.wait_s), f"token quota: store {job.store_id}'s OpenAI quota "
                                                     f"(openai_tokens_per_minute) has room for this call in "
                                                     f"{refused.wait_s:.1f}s; rescheduled")
        try:
            decision = self.store.reserve(self.limits, tokens, max_wait_s=max_wait, job_id=job.id)
        except SQLAlchemyError as exc:  # pool exhausted, database restarting: nothing was sent, so no attempt spent
            self._give_back(quota)
            raise RetryLater(UNAVAILABLE_RETRY_S, f"rate limiter unavailable ({type(exc).__name__}); "
                                                  "rescheduled") from None
        if not decision.granted:
            self._give_back(quota)
            raise RetryLater(_delay(decision.wait_s), f"rate limiter: the shared OpenAI budget ({self.limits.rpm} "
                                                      f"requests/min, {self.limits.tpm} tokens/min) has room for "
                                                      f"this call in {decision.wait_s:.1f}s; rescheduled")
        wait = max(decision.wait_s, quota.wait_s if quota is not None else 0.0)
        if wait > 0:
            time.sleep(wait)
        return Grant(decision.reservation, wait, job.id, quota)

    def _give_back(self, quota: Optional[StoreGrant]) -> None:
        """The store's reservation, unused (the shared budget said no, or could not be reached)."""
        if quota is None:
            return
        try:
            self.quotas.settle(quota, Settlement(sent=False, used_tokens=0))
        except SQLAlchemyError:  # its tokens stay charged to the store until they refill: the safe side
            pass

    def settle(self, grant: Grant, outcome: Settlement) -> dict:
        if grant.store is not None:
            try:
                self.quotas.settle(grant.store, outcome)
            except SQLAlchemyError:  # the store's quota keeps the whole charge: the safe side
                pass
        return self.store.settle(self.limits, grant.reservation, outcome, job_id=grant.job_id)

    def release(self, grant: Grant) -> dict:
        """Give a grant back unused (no request was sent)."""
        return self.settle(grant, Settlement(sent=False, used_tokens=0))

    def stats(self) -> dict:
        return self.store.stats(self.limits)
