"""Query plans from a test: EXPLAIN of a statement with its parameters, and the parameters GET /jobs passes."""
from __future__ import annotations

from sqlalchemy import text

LIST_PARAMS = dict(status=None, job_type=None, store_id=None, user_id=None, batch_id=None, after=None, limit=51,
                   max_bytes=8 * 1024 * 1024)


def plan(engine, sql, params=None):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params or {}))
