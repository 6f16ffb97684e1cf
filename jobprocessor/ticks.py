"""Ticks: how many calls one process runs at once, and the calls' history (table job_ticks,
sql/056_job_ticks_v1.sql).

A call's first claim statement inserts its row (queries.CLAIM_FIRST), so a call with nothing due stays one
statement; a call that did something updates the row when it ends. Operators read it through GET /ticks,
`flask jobs ticks`, /metrics (the last tick's age) and the `no_tick` alert of job_queue_alerts.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from .retention import delete_in_batches

TICK_COLUMNS = ("id", "worker", "started_at", "ended_at", "job_limit", "budget_s", "job_type", "rounds", "claimed",
                "succeeded", "retried", "failed", "released", "rescued", "abandoned", "lost", "busy_s")
COUNTS = ("rounds", "claimed", "succeeded", "retried", "failed", "released", "rescued", "abandoned", "lost")

FINISH_TICK = f"""
UPDATE job_ticks SET ended_at = now(), busy_s = :busy_s, {", ".join(f"{c} = :{c}" for c in COUNTS)}
WHERE id = :id
"""

RECENT_TICKS = f"""
SELECT {", ".join(TICK_COLUMNS)},
       round(extract(epoch FROM coalesce(ended_at, now()) - started_at)::numeric, 3) AS duration_s
FROM job_ticks
WHERE CAST(:before AS bigint) IS NULL OR id < CAST(:before AS bigint)
ORDER BY id DESC
LIMIT :limit
"""

# job_ticks_started_idx: the newest entry only
LAST_TICK_AGE = "SELECT extract(epoch FROM now() - max(started_at)) FROM job_ticks"

# Bounded: at most `batch` rows per statement, oldest first (job_ticks_started_idx), so a first run over a long
# history never holds locks or runs long; the caller repeats until fewer than `batch` went.
PRUNE_TICKS = """
DELETE FROM job_ticks
WHERE id IN (SELECT id FROM job_ticks WHERE started_at < now() - CAST(:keep AS interval)
             ORDER BY started_at LIMIT :batch)
"""


def finish(conn: Connection, tick_id: int, counts: dict, busy_s: float) -> None:
    conn.execute(text(FINISH_TICK), {"id": tick_id, "busy_s": round(busy_s, 3),
                                     **{c: int(counts.get(c, 0)) for c in COUNTS}})


def recent(conn: Connection, limit: int = 50, before: Optional[int] = None) -> list[dict]:
    rows = conn.execute(text(RECENT_TICKS), {"limit": limit, "before": before}).mappings().all()
    return [dict(row) for row in rows]


def last_tick_age_s(conn: Connection) -> Optional[float]:
    value = conn.execute(text(LAST_TICK_AGE)).scalar()
    return None if value is None else float(value)


def prune(engine: Engine, keep: timedelta, batch: int = 10000, max_batches: int = 100) -> int:
    """Delete ticks older than `keep`, in batches; returns how many rows went."""
    return delete_in_batches(engine, PRUNE_TICKS, {"keep": keep}, batch, max_batches)


class TickGate:
    """At most `limit` calls at once in this process; one more is refused at once (not queued): a cron that
    overlaps itself must not pile calls onto the request threads the API and /healthz need."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    def try_enter(self, limit: int) -> bool:
        with self._lock:
            if self.running >= limit:
                return False
            self.running += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.running -= 1


GATE = TickGate()
