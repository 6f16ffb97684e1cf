"""Query plans from a test: EXPLAIN of a statement with its parameters, the plans of every statement a statement
runs (a plpgsql function's own statements included), and the parameters GET /jobs passes."""
from __future__ import annotations

from sqlalchemy import text

LIST_PARAMS = dict(status=None, job_type=None, store_id=None, user_id=None, batch_id=None, after=None, limit=51,
                   max_bytes=8 * 1024 * 1024)


def plan(engine, sql, params=None):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params or {}))


def nested_plans(engine, statement: str, parameters) -> str:
    """Run `statement` (as a driver-level string with its parameters, e.g. one recorded by before_cursor_execute)
    with auto_explain logging every plan, nested statements' too; returns the plans as text."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table would rightly be scanned otherwise
        conn.execute(text("LOAD 'auto_explain'"))
        for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
            conn.execute(text(f"SET LOCAL auto_explain.{setting}"))
        dbapi = conn.connection.dbapi_connection
        del dbapi.notices[:]
        dbapi.cursor().execute(statement, parameters)
        return "".join(dbapi.notices)
