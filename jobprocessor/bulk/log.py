"""The action log (table job_actions, sql/080_dashboard_v1.sql): every bulk action, pause, limit and schedule
change made through the dashboard, POST /jobs/bulk or the CLI, with when, who, what, on what, and how many jobs."""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any, Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from ..retention import delete_in_batches

logger = logging.getLogger("jobprocessor.bulk")

COLUMNS = ("id", "at", "finished_at", "actor", "role", "action", "filter", "matched", "changed", "status", "detail")

START = """
INSERT INTO job_actions (actor, role, action, filter, matched)
VALUES (:actor, :role, :action, CAST(:filter AS jsonb), :matched)
RETURNING id
"""
PROGRESS = "UPDATE job_actions SET changed = :changed WHERE id = :id"
FINISH = """
UPDATE job_actions SET changed = :changed, status = :status, detail = :detail, finished_at = now() WHERE id = :id
"""
RECORD = """
INSERT INTO job_actions (actor, role, action, filter, matched, changed, status, detail, finished_at)
VALUES (:actor, :role, :action, CAST(:filter AS jsonb), NULL, :changed, 'done', :detail, now())
RETURNING id
"""
# the retention (system.cleanup, JOBS_ACTION_LOG_DAYS): finished entries older than it; a bulk action still running
# keeps its entry, unless it started a day before that (its process died, or could not mark it failed)
PRUNE = """
DELETE FROM job_actions
WHERE id IN (SELECT id FROM job_actions
             WHERE status <> 'running' AND finished_at < now() - CAST(:keep AS interval)
                OR status = 'running' AND at < now() - CAST(:keep AS interval) - interval '1 day'
             ORDER BY id LIMIT :batch)
"""
RECENT = f"""
SELECT {", ".join(COLUMNS)} FROM job_actions
WHERE CAST(:before AS bigint) IS NULL OR id < CAST(:before AS bigint)
ORDER BY id DESC
LIMIT :limit
"""


def start(conn: Connection, actor, action: str, on: dict, matched: Optional[int]) -> int:
    return int(conn.execute(text(START), {"actor": actor.channel, "role": actor.role, "action": action,
                                          "filter": json.dumps(on, default=str), "matched": matched}).scalar_one())


def progress(conn: Connection, action_id: int, changed: int) -> None:
    conn.execute(text(PROGRESS), {"id": action_id, "changed": changed})


def finish(conn: Connection, action_id: int, changed: int, status: str = "done",
           detail: Optional[str] = None) -> None:
    conn.execute(text(FINISH), {"id": action_id, "changed": changed, "status": status,
                                "detail": None if detail is None else detail[:1000]})


def fail_quietly(engine: Engine, action_id: int, changed: int, reason: str) -> None:
    """Mark an action that stopped half-way; best effort (the database may be what failed)."""
    try:
        with engine.begin() as conn:
            finish(conn, action_id, changed, "failed", f"stopped after {changed} jobs: {reason}")
    except Exception:  # noqa: BLE001 - the row keeps status 'running' and its count: still true
        logger.warning("could not mark action %s as failed", action_id)


def record(engine: Engine, actor, action: str, on: dict, changed: int = 1, detail: Optional[str] = None) -> int:
    """A one-step action (a schedule switched off, ...) in a transaction of its own."""
    with engine.begin() as conn:
        return record_in(conn, actor, action, on, changed, detail)


def record_in(conn: Connection, actor, action: str, on: dict, changed: int = 1, detail: Optional[str] = None) -> int:
    """A one-step action in the caller's transaction (flow/audit.py: a pause or limit change and its record commit
    together); returns the log row's id."""
    return int(conn.execute(text(RECORD), {"actor": actor.channel, "role": actor.role, "action": action,
                                           "filter": json.dumps(on, default=str), "changed": changed,
                                           "detail": detail}).scalar_one())


def recent(conn: Connection, limit: int = 50, before: Optional[int] = None) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(text(RECENT), {"limit": limit, "before": before}).mappings()]


def prune(engine: Engine, keep: timedelta, batch: int = 10000, max_batches: int = 100) -> int:
    """Delete the action log's finished entries older than `keep`, in batches; returns how many went."""
    return delete_in_batches(engine, PRUNE, {"keep": keep}, batch, max_batches)
