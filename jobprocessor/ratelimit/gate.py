"""How long until a shared limit has room for one more typical call: what a call's rate-limited lane asks before it
starts a job (jobprocessor/processor.py). A job whose limit has no room soon stays in line, leased and unstarted
(no attempt spent), instead of being started only for the limiter to reschedule it: the lane pulls work at the
limit's pace, however many calls, processes and instances share it.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from . import core
from .core import Limits, State
from .store import _SELECT_LIST, DEFAULT_NAME, _state

READ_STATE = f"""
SELECT {_SELECT_LIST}, extract(epoch FROM clock_timestamp())::float8 AS db_now
FROM rate_limiter WHERE name = :name
"""


def typical_tokens(state: State) -> int:
    """The mean size of the reservations made so far (0 before the first)."""
    if state.reserved_requests <= 0:
        return 0
    return int(state.reserved_tokens / state.reserved_requests)


def start_wait(state: State, limits: Limits, now: float) -> tuple[float, float]:
    """(seconds until a call of typical size may start, seconds of budget one such call uses). Pure."""
    tokens = typical_tokens(state)
    wait = max(0.0, core.start_time(state, limits, now, tokens) - now)
    return wait, max(1.0 / limits.request_rate, tokens / limits.token_rate)


def start_wait_s(engine: Engine, limits: Limits, name: str = DEFAULT_NAME) -> tuple[float, float]:
    """One read, no lock. A limiter never used has room now."""
    with engine.connect() as conn:
        row = conn.execute(text(READ_STATE), {"name": name}).mappings().first()
    if row is None:
        return 0.0, 1.0 / limits.request_rate
    return start_wait(_state(row), limits, float(row["db_now"]))


def for_limit(limit: str, engine: Engine, settings) -> tuple[float, float]:
    """start_wait_s of a limit a handler declares (handler_registry.RATE_LIMITS)."""
    if limit == "openai":
        return start_wait_s(engine, Limits(settings.OPENAI_RPM, settings.OPENAI_TPM))
    raise ValueError(f"unknown rate limit {limit!r}")
