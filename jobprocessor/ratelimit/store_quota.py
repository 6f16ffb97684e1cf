"""A store's share of the shared OpenAI budget: its openai_tokens_per_minute (job_store_limits, sql/027; its own
row's, else the every-store row's), enforced with the limiter's own core on a limiter row of the store's own
(rate_limiter, name 'openai:store:<store_id>'), charged what the shared row is charged for the call (what OpenAI
counts). A call reserves on the store's row first, then on the shared one (limiter.py); whichever says no, nothing
stays reserved on the other.

When the store's quota has no room within QUOTA_INLINE_WAIT_S, the call is deferred (RetryLater: no attempt spent)
and the store/type pair is held (job_store_quota_holds) until the quota has room: claims leave the pair's jobs alone
until then (sql/028, sql/029), so a rate-limited lane is not filled with jobs the quota cannot serve, while the other
stores' jobs go on. The lane's gate (gate.py) reads only the shared row, which a refused store call never touches:
a spent store neither closes the gate for others nor makes the lane spin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..flow.limits import token_quota
from ..job import PermanentError
from .core import Decision, Limits, Reservation, Settlement
from .store import LimiterStore

QUOTA_INLINE_WAIT_S = 1.0  # a call waits at most this long for its store's quota (a lane's thread is held meanwhile)

# the pair's jobs are left alone until the quota has room; expired holds of the store go at the same time
HOLD = """
WITH held AS (
    INSERT INTO job_store_quota_holds (store_key, type, until)
    VALUES (:store_key, :type, to_timestamp(CAST(:until AS float8)))
    ON CONFLICT (store_key, type) DO UPDATE SET until = greatest(job_store_quota_holds.until, excluded.until)
    RETURNING 1
)
DELETE FROM job_store_quota_holds WHERE store_key = :store_key AND until < now() - interval '1 minute'
"""


def limiter_name(store_id: str) -> str:
    return f"openai:store:{store_id}"


@dataclass(frozen=True)
class StoreGrant:
    """What a call reserved on its store's quota."""

    store_id: str
    limits: Limits
    reservation: Reservation
    wait_s: float


class StoreQuotas:
    def __init__(self, engine: Engine, rpm: int):
        self.engine, self.rpm = engine, rpm

    def reserve(self, store_id: Optional[str], job_type: str, tokens: int,
                max_wait_s: float) -> tuple[Optional[StoreGrant], Optional[Decision]]:
        """(grant, None): reserved on the store's quota; (None, None): the store has no quota; (None, decision):
        no room within max_wait_s -- the pair is held until decision.wait_s from now. One transaction."""
        if not store_id:
            return None, None
        with self.engine.begin() as conn:
            quota = token_quota(conn, store_id)
            if quota is None:
                return None, None
            limits = Limits(self.rpm, quota)
            if not limits.fits(tokens):  # it would wait for ever: fail it now, with the figure to change
                raise PermanentError(f"this call counts {tokens} tokens, more than store {store_id}'s whole OpenAI "
                                     f"quota (openai_tokens_per_minute={quota}); it can never be sent")
            decision, now = LimiterStore(self.engine, limiter_name(store_id)).reserve_in(conn, limits, tokens,
                                                                                        max_wait_s)
            if not decision.granted:
                conn.execute(text(HOLD), {"store_key": store_id, "type": job_type, "until": now + decision.wait_s})
                return None, decision
        return StoreGrant(store_id, limits, decision.reservation, decision.wait_s), None

    def settle(self, grant: StoreGrant, outcome: Settlement) -> None:
        """The call's end, for the store's row: the same charge kept or given back as on the shared row (what the
        server said about the account is the shared row's business)."""
        LimiterStore(self.engine, limiter_name(grant.store_id)).settle(
            grant.limits, grant.reservation, Settlement(sent=outcome.sent, used_tokens=outcome.used_tokens))
