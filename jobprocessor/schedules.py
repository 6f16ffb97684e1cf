"""Recurring jobs: the job_schedules table (sql/053_job_schedules_v1.sql) and its SQL.

A /process-pending call runs `enqueue_due()` (through jobprocessor/maintenance/scheduler.py) after a claim round
whose statement found a schedule due (queries.claim's `schedules_due`); a later round claims the jobs it enqueued
(maintenance/tick.py's `TickMaintenance.after_claim`, called by processor.py's `_claim_round`). The schedules
whose next_run_at has come are locked FOR UPDATE SKIP LOCKED (a concurrent caller skips them instead of waiting),
each gets one job with the idempotency key
`schedule:<name>:<slot>` (so even a caller that raced past the lock cannot enqueue the same slot twice), and
next_run_at moves to the first slot after now. Job and next_run_at change in one transaction: the job exists if and
only if the schedule moved on. Slots missed while nothing called collapse into one run (no burst of catch-up jobs
after an outage).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from . import queries
from .config import Settings
from .enqueue import InvalidJob, validate_job
from .policies.cron_expr import Cron

log = logging.getLogger("jobprocessor.schedules")

SCHEDULE_COLUMNS = ("name", "cron", "job_type", "payload", "priority", "enabled", "next_run_at", "last_enqueued_at",
                    "last_job_id", "created_at")
_SELECT = ", ".join(SCHEDULE_COLUMNS)

# job_schedules_due_idx (next_run_at) WHERE enabled: with nothing due this reads one index page. The LIMIT bounds
# one call's work; what is left is due for the next call.
DUE_SCHEDULES = f"""
SELECT {_SELECT} FROM job_schedules
WHERE enabled AND next_run_at <= now()
ORDER BY next_run_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""

ADVANCE = """
UPDATE job_schedules
SET next_run_at = :next_run_at, last_enqueued_at = CASE WHEN :job_id IS NULL THEN last_enqueued_at ELSE now() END,
    last_job_id = coalesce(:job_id, last_job_id)
WHERE name = :name
"""

LIST = f"SELECT {_SELECT} FROM job_schedules ORDER BY name"
GET = f"SELECT {_SELECT} FROM job_schedules WHERE name = :name"
INSERT = f"""
INSERT INTO job_schedules (name, cron, job_type, payload, priority, enabled, next_run_at)
VALUES (:name, :cron, :job_type, CAST(:payload AS jsonb), :priority, :enabled, :next_run_at)
ON CONFLICT (name) DO NOTHING
RETURNING {_SELECT}
"""
# Enabling recomputes next_run_at from now, so a schedule switched off for a week does not fire for a stale slot.
SET_ENABLED = f"""
UPDATE job_schedules SET enabled = :enabled, next_run_at = coalesce(:next_run_at, next_run_at)
WHERE name = :name RETURNING {_SELECT}
"""
DELETE = "DELETE FROM job_schedules WHERE name = :name RETURNING name"
NOW = "SELECT now()"


@dataclass(frozen=True)
class DueResult:
    enqueued: int = 0  # jobs created for due slots
    duplicates: int = 0  # slots whose job already existed (idempotency key seen before)
    invalid: int = 0  # slots skipped because the job could not be built (unknown type, bad payload)

    def as_dict(self) -> dict:
        return {"enqueued": self.enqueued, "duplicates": self.duplicates, "invalid": self.invalid}


def slot_key(name: str, slot: datetime) -> str:
    return f"schedule:{name}:{slot.astimezone(timezone.utc).isoformat()}"


def enqueue_due(conn: Connection, settings: Settings, *, limit: int) -> DueResult:
    """Enqueue one job for each due schedule (up to `limit`) and advance them; call inside a transaction."""
    rows = conn.execute(text(DUE_SCHEDULES), {"limit": limit}).mappings().all()
    if not rows:
        return DueResult()
    now = conn.execute(text(NOW)).scalar_one()
    enqueued = duplicates = invalid = 0
    for row in rows:
        slot = row["next_run_at"]
        job_id = None
        try:
            job = validate_job({"type": row["job_type"], "payload": row["payload"], "priority": row["priority"],
                                "idempotency_key": slot_key(row["name"], slot)}, settings)
        except InvalidJob as exc:
            invalid += 1
            log.warning(json.dumps({"event": "schedule_invalid", "schedule": row["name"], "slot": slot.isoformat(),
                                    "error": exc.message}))
        else:
            (job_id, created), = queries.enqueue(conn, [job])
            enqueued += created
            duplicates += not created
        try:
            following = Cron.parse(row["cron"]).next_after(max(now, slot))
        except ValueError as exc:  # an expression written by hand into the table: stop it, say why
            log.error(json.dumps({"event": "schedule_bad_cron", "schedule": row["name"], "error": str(exc)}))
            conn.execute(text("UPDATE job_schedules SET enabled = false WHERE name = :name"), {"name": row["name"]})
            continue
        conn.execute(text(ADVANCE), {"name": row["name"], "next_run_at": following, "job_id": job_id})
    return DueResult(enqueued, duplicates, invalid)


# --- management (`flask jobs schedule ...`) ------------------------------------------------------------------------

def schedule_to_dict(row: Any) -> dict:
    return {c: (row[c].isoformat() if hasattr(row[c], "isoformat") else row[c]) for c in SCHEDULE_COLUMNS}


def list_schedules(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [schedule_to_dict(row) for row in conn.execute(text(LIST)).mappings()]


def add_schedule(engine: Engine, settings: Settings, *, name: str, cron: str, job_type: str,
                 payload: Optional[dict] = None, priority: Any = None, enabled: bool = True) -> Optional[dict]:
    """Create a schedule; None when the name is taken. Raises CronError or InvalidJob on bad input."""
    parsed = Cron.parse(cron)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidJob("name", "name must be a non-empty string of at most 200 characters")
    job = validate_job({"type": job_type, "payload": payload or {}, "priority": priority}, settings)
    with engine.begin() as conn:
        now = conn.execute(text(NOW)).scalar_one()
        row = conn.execute(text(INSERT), {
            "name": name, "cron": parsed.expression, "job_type": job["type"], "payload": json.dumps(job["payload"]),
            "priority": job["priority"], "enabled": enabled, "next_run_at": parsed.next_after(now),
        }).mappings().first()
    return schedule_to_dict(row) if row else None


def set_enabled(engine: Engine, name: str, enabled: bool) -> Optional[dict]:
    with engine.begin() as conn:
        next_run_at = None
        if enabled:
            current = conn.execute(text(GET), {"name": name}).mappings().first()
            if current is None:
                return None
            next_run_at = Cron.parse(current["cron"]).next_after(conn.execute(text(NOW)).scalar_one())
        row = conn.execute(text(SET_ENABLED), {"name": name, "enabled": enabled, "next_run_at": next_run_at}) \
            .mappings().first()
    return schedule_to_dict(row) if row else None


def remove_schedule(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(text(DELETE), {"name": name}).first() is not None
