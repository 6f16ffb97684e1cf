"""Every pause and limit change, by whichever path makes it -- the HTTP API (api/flow.py), the CLI (`flask jobs
pause|resume|limits set|limits remove`) or the dashboard (dashboard/flow_control.py) -- written to the action log
(table job_actions, sql/080_dashboard_v1.sql: when, who, what, on what) in the transaction that makes the change,
so a change is never made without its record, nor recorded without being made. pauses.py and limits.py call it;
their callers only say who acts."""
from __future__ import annotations

from sqlalchemy.engine import Connection

from ..bulk.log import record_in


def record(conn: Connection, actor, action: str, on: dict, changed: int = 1) -> int:
    """Log `action` ("pause.add", "pause.remove", "limit.put", "limit.remove") on `on` by `actor` (a bulk.Actor:
    channel dashboard/api/cli and the role within it); returns the log row's id."""
    return record_in(conn, actor, action, on, changed)
