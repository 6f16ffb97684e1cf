"""Which stores wait longest: job_store_lag() (sql/061_queue_health_v4.sql), the same reading as the store_lag
alert of job_queue_alerts, for /metrics and the dashboard."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

LAG = "SELECT store_id, priority, oldest_run_at, wait_s FROM job_store_lag(:min_wait_s, :limit)"


def worst_stores(conn: Connection, limit: int = 5, min_wait_s: float = 0.0) -> list[dict]:
    """The `limit` stores whose oldest due job has waited longest (at least min_wait_s), worst first: store_id
    (None: jobs without a store), priority, oldest_run_at, wait_s."""
    return [dict(row) for row in conn.execute(text(LAG), {"min_wait_s": min_wait_s, "limit": limit}).mappings()]
