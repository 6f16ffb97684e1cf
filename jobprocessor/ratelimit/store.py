"""The limiter's state in PostgreSQL (table rate_limiter, sql/030_rate_limiter_v1.sql and _v2), shared by every
process.

Each operation is one short transaction: lock the limiter's row (SELECT ... FOR UPDATE, which also reads the
database clock, the one clock every host agrees on), let the pure core compute the new state, write it back in one
statement, commit. The row lock is held for those few milliseconds only, never across the HTTP call: a caller that
must wait for its slot sleeps after the commit.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from . import core
from .core import Decision, Limits, Reservation, Settlement, State

DEFAULT_NAME = "openai"
STALE_WAITS = "10 minutes"  # wait rows this far past are deleted (a job that was cancelled while rescheduled)

_TIMES = ("request_free_at", "token_free_at", "hold_until", "server_seen_at", "updated_at")
_COLUMNS = [f.name for f in fields(State)]
_SELECT_LIST = ", ".join(f"extract(epoch FROM {c})::float8 AS {c}" if c in _TIMES else c for c in _COLUMNS)

# FOR UPDATE serialises the read-compute-write of concurrent callers on this one row. clock_timestamp() (not
# now(), which is the transaction's start) is the time the core computes at; the core never lets it run backwards.
LOCK_ROW = f"""
SELECT {_SELECT_LIST}, extract(epoch FROM clock_timestamp())::float8 AS db_now
FROM rate_limiter WHERE name = :name
FOR UPDATE
"""

READ_ROW = f"""
SELECT {_SELECT_LIST}, extract(epoch FROM clock_timestamp())::float8 AS db_now,
       (SELECT count(*) FROM rate_limiter_waits w WHERE w.name = :name AND w.until > clock_timestamp()) AS waiting
FROM rate_limiter WHERE name = :name
"""

CREATE_ROW = "INSERT INTO rate_limiter (name) VALUES (:name) ON CONFLICT (name) DO NOTHING"

_SET_LIST = ",\n    ".join(
    f"{c} = to_timestamp(CAST(:{c} AS float8))" if c in _TIMES else
    f"{c} = CAST(:{c} AS integer[])" if c == "window_requests" else
    f"{c} = CAST(:{c} AS bigint[])" if c in ("window_tokens", "window_charged") else
    f"{c} = :{c}"
    for c in _COLUMNS)

_SAVE_CTE = f"""saved AS (
    UPDATE rate_limiter SET
    {_SET_LIST}
    WHERE name = :name
    RETURNING 1
)"""

# A reservation writes the state and, when the job will wait (sleeping for its slot, or rescheduled), the wait
# row the stats count; rescheduling also deletes wait rows long past. One statement, one round trip.
SAVE_RESERVATION = f"""
WITH {_SAVE_CTE},
waits AS (
    INSERT INTO rate_limiter_waits (job_id, name, until)
    SELECT CAST(:job_id AS bigint), :name, to_timestamp(CAST(:wait_until AS float8))
    WHERE CAST(:job_id AS bigint) IS NOT NULL AND CAST(:wait_until AS float8) IS NOT NULL
    ON CONFLICT (job_id) DO UPDATE SET name = excluded.name, until = excluded.until
    RETURNING 1
),
stale AS (
    DELETE FROM rate_limiter_waits
    WHERE CAST(:prune AS boolean) AND name = :name AND until < clock_timestamp() - interval '{STALE_WAITS}'
      AND job_id IS DISTINCT FROM CAST(:job_id AS bigint)
    RETURNING 1
)
SELECT (SELECT count(*) FROM saved) AS saved
"""

# A settlement writes the state, ends the job's wait row and counts the jobs still waiting (for the log line).
SAVE_SETTLEMENT = f"""
WITH {_SAVE_CTE},
done AS (
    DELETE FROM rate_limiter_waits WHERE job_id = CAST(:job_id AS bigint) RETURNING 1
)
SELECT (SELECT count(*) FROM saved) AS saved,
       (SELECT count(*) FROM rate_limiter_waits w
        WHERE w.name = :name AND w.until > clock_timestamp()
          AND w.job_id IS DISTINCT FROM CAST(:job_id AS bigint)) AS waiting
"""


def _state(row) -> State:
    values = {c: row[c] for c in _COLUMNS}
    values["window_requests"] = tuple(values["window_requests"] or ())
    values["window_tokens"] = tuple(values["window_tokens"] or ())
    values["window_charged"] = tuple(values["window_charged"] or ())
    return State(**values)


def _params(name: str, state: State) -> dict:
    params = {c: getattr(state, c) for c in _COLUMNS}
    params["window_requests"] = list(state.window_requests)
    params["window_tokens"] = list(state.window_tokens)
    params["window_charged"] = list(state.window_charged)
    params["name"] = name
    return params


class LimiterStore:
    """One named limiter's shared state. Stateless itself: every method is one transaction on `engine`."""

    def __init__(self, engine: Engine, name: str = DEFAULT_NAME):
        self.engine, self.name = engine, name

    def _lock(self, conn) -> tuple[State, float]:
        row = conn.execute(text(LOCK_ROW), {"name": self.name}).mappings().first()
        if row is None:  # first use: a row with full buckets (concurrent creators: one inserts, all then lock it)
            conn.execute(text(CREATE_ROW), {"name": self.name})
            row = conn.execute(text(LOCK_ROW), {"name": self.name}).mappings().first()
        return _state(row), float(row["db_now"])

    def reserve(self, limits: Limits, tokens: int, max_wait_s: float, job_id: Optional[int] = None) -> Decision:
        """Reserve one request and `tokens` tokens starting within max_wait_s (see core.reserve)."""
        with self.engine.begin() as conn:
            return self.reserve_in(conn, limits, tokens, max_wait_s, job_id)[0]

    def reserve_in(self, conn, limits: Limits, tokens: int, max_wait_s: float,
                   job_id: Optional[int] = None) -> tuple[Decision, float]:
        """reserve() inside the caller's transaction (which holds the row's lock until it ends); also returns the
        time it computed at (the database's clock, epoch seconds)."""
        state, now = self._lock(conn)
        state, decision = core.reserve(state, limits, now, tokens, max_wait_s)
        waits = decision.wait_s > 0 and job_id is not None
        conn.execute(text(SAVE_RESERVATION), {
            **_params(self.name, state), "job_id": job_id if waits else None,
            "wait_until": state.updated_at + decision.wait_s if waits else None,
            "prune": not decision.granted,
        })
        return decision, state.updated_at

    def settle(self, limits: Limits, reservation: Reservation, outcome: Settlement,
               job_id: Optional[int] = None) -> dict:
        """Account for a finished call (see core.settle); returns the stats after it, for the per-call log line."""
        with self.engine.begin() as conn:
            state, now = self._lock(conn)
            state = core.settle(state, limits, now, reservation, outcome)
            row = conn.execute(text(SAVE_SETTLEMENT), {**_params(self.name, state), "job_id": job_id}).first()
        return {**core.stats(state, limits, now), "waiting_jobs": int(row.waiting)}

    def stats(self, limits: Limits) -> dict:
        """The current figures, read without locking (a limiter never used yet reads as full and idle)."""
        with self.engine.connect() as conn:
            row = conn.execute(text(READ_ROW), {"name": self.name}).mappings().first()
            if row is None:
                now = float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())::float8")).scalar())
                return {**core.stats(core.new_state(now), limits, now), "waiting_jobs": 0}
        return {**core.stats(_state(row), limits, float(row["db_now"])), "waiting_jobs": int(row["waiting"])}
