"""Counts that stay cheap however big the table: exact up to a cap (the scan stops there), the planner's estimate
beyond it, and the oldest due wait from one index probe per priority. What the dashboard and /metrics show of the
live queue, so that a backlog of a million jobs costs them no more than one of ten thousand."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection

DUE = "status = 'pending' AND run_at <= now()"

# jobs_claim_idx (priority, run_at, id) WHERE pending: the head of each priority level, ten probes
OLDEST_DUE_WAIT = """
SELECT extract(epoch FROM now() - min(h.run_at))::float8
FROM generate_series(1, 10) AS p
CROSS JOIN LATERAL (SELECT run_at FROM jobs WHERE status = 'pending' AND priority = p ORDER BY run_at, id LIMIT 1) AS h
WHERE h.run_at <= now()
"""


@dataclass(frozen=True)
class Count:
    n: int
    exact: bool  # False: more than the cap, n is the planner's estimate

    def __str__(self) -> str:
        return f"{self.n:,}" if self.exact else f"≈{self.n:,}"


def bounded_count(conn: Connection, where: str, params: Optional[dict] = None, cap: int = 10_000) -> Count:
    """Jobs matching `where` (an SQL condition on jobs with bound parameters): exact up to `cap`, else estimated."""
    params = params or {}
    n = int(conn.execute(text(f"SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {where} LIMIT {int(cap) + 1}) AS c"),
                         params).scalar_one())
    if n <= cap:
        return Count(n, True)
    plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM jobs WHERE {where}"), params).scalar_one()
    return Count(max(cap + 1, int(plan[0]["Plan"]["Plan Rows"])), False)


def oldest_due_wait_s(conn: Connection) -> Optional[float]:
    """Seconds the oldest due pending job has waited since its run_at; None when none is due."""
    value = conn.execute(text(OLDEST_DUE_WAIT)).scalar()
    return None if value is None else float(value)
