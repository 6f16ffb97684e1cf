"""Pauses (table job_pauses): of a job type, of a store, or of one type of one store. Claims take no paused job
from their next round on; jobs already running finish. Removing the pause resumes."""
from __future__ import annotations

from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection

from . import InvalidFlowInput, audit, optional_name, plain

COLUMNS = "id, type, store_id, created_at"

# One pause per (store, type): a repeat returns the existing one (job_pauses_key)
ADD = f"""
WITH added AS (
    INSERT INTO job_pauses (type, store_id) VALUES (:type, :store_id)
    ON CONFLICT ((coalesce(store_id, '')), (coalesce(type, ''))) DO NOTHING
    RETURNING {COLUMNS}
)
SELECT {COLUMNS}, true AS created FROM added
UNION ALL
SELECT {COLUMNS}, false FROM job_pauses
WHERE coalesce(store_id, '') = coalesce(:store_id, '') AND coalesce(type, '') = coalesce(:type, '')
  AND NOT EXISTS (SELECT 1 FROM added)
"""
LIST = f"""
SELECT {COLUMNS} FROM job_pauses
WHERE (CAST(:store_id AS text) IS NULL OR store_id = CAST(:store_id AS text))
  AND (CAST(:type AS text) IS NULL OR type = CAST(:type AS text))
ORDER BY id
"""
REMOVE = "DELETE FROM job_pauses WHERE id = :id RETURNING id, type, store_id"
FIND = f"""
SELECT {COLUMNS} FROM job_pauses
WHERE coalesce(store_id, '') = coalesce(:store_id, '') AND coalesce(type, '') = coalesce(:type, '')
"""


def validate(body) -> tuple[Optional[str], Optional[str]]:
    """(type, store_id) of a pause body {"type"?, "store_id"?}: at least one of them."""
    if not isinstance(body, dict):
        raise InvalidFlowInput("body", "The body must be an object {\"type\"?, \"store_id\"?}.")
    unknown = sorted(set(body) - {"type", "store_id"})
    if unknown:
        raise InvalidFlowInput(unknown[0], f"unknown field {unknown[0][:50]!r}: a pause has type and store_id")
    job_type = optional_name(body, "type", "a job type")
    store_id = optional_name(body, "store_id", "a store")
    if job_type is None and store_id is None:
        raise InvalidFlowInput("type", "a pause names a type, a store_id, or both (to stop everything, stop the "
                                       "cron)")
    return job_type, store_id


def add_pause(conn: Connection, *, job_type: Optional[str] = None, store_id: Optional[str] = None,
              actor) -> tuple[dict, bool]:
    """Pause a type, a store, or a type of a store, logged as `actor`'s (audit.py); returns (the pause, whether it
    is new)."""
    row = conn.execute(text(ADD), {"type": job_type, "store_id": store_id}).mappings().one()
    pause = plain(row)
    audit.record(conn, actor, "pause.add", {"type": job_type, "store_id": store_id, "id": pause["id"]},
                 changed=int(bool(pause["created"])))
    return {key: pause[key] for key in ("id", "type", "store_id", "created_at")}, bool(pause["created"])


def list_pauses(conn: Connection, *, job_type: Optional[str] = None, store_id: Optional[str] = None) -> list[dict]:
    """Every pause (or those of one store / one type), oldest first."""
    return [plain(row) for row in conn.execute(text(LIST), {"type": job_type, "store_id": store_id}).mappings()]


def find_pause(conn: Connection, *, job_type: Optional[str] = None,
               store_id: Optional[str] = None) -> Optional[dict]:
    row = conn.execute(text(FIND), {"type": job_type, "store_id": store_id}).mappings().first()
    return None if row is None else plain(row)


def remove_pause(conn: Connection, pause_id: int, *, actor) -> bool:
    """Resume, logged as `actor`'s (audit.py): True if the pause existed (nothing is logged if it did not)."""
    removed = conn.execute(text(REMOVE), {"id": pause_id}).mappings().first()
    if removed is None:
        return False
    audit.record(conn, actor, "pause.remove", {"id": pause_id, "type": removed["type"],
                                               "store_id": removed["store_id"]})
    return True
