"""Per-store limits and weights (table job_store_limits), changeable at runtime: a row per store (store_id None:
every store, each on its own) and optionally per type of it. A store's value is its own row's, else the every-store
row's, field by field. sql/027_job_flow_control_v1.sql says what each field means and how it is counted."""
from __future__ import annotations

from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection

from . import InvalidFlowInput, audit, optional_name, plain

FIELDS = {  # name -> (lowest, highest)
    "max_running": (0, 1_000_000),
    "max_starts_per_minute": (0, 1_000_000),
    "weight": (1, 1000),
    "openai_tokens_per_minute": (1, 2_000_000_000),
}
PER_STORE_ONLY = ("weight", "openai_tokens_per_minute")
COLUMNS = "store_id, type, " + ", ".join(FIELDS) + ", updated_at"

# PUT replaces the row of (store_id, type) as a whole: a field left out is no longer set there. A PUT of the values
# the row already has writes nothing (no row comes back: the row is read as it is, and the log says 0 changed)
PUT = f"""
INSERT INTO job_store_limits AS l (store_id, type, {", ".join(FIELDS)}, updated_at)
VALUES (:store_id, :type, {", ".join(":" + f for f in FIELDS)}, now())
ON CONFLICT ((coalesce(store_id, '')), (coalesce(type, ''))) DO UPDATE
SET {", ".join(f"{f} = excluded.{f}" for f in FIELDS)}, updated_at = now()
WHERE ({", ".join(f"l.{f}" for f in FIELDS)}) IS DISTINCT FROM ({", ".join(f"excluded.{f}" for f in FIELDS)})
RETURNING {COLUMNS}, (xmax = 0) AS created
"""
CURRENT = f"""
SELECT {COLUMNS}, false AS created FROM job_store_limits
WHERE coalesce(store_id, '') = coalesce(:store_id, '') AND coalesce(type, '') = coalesce(:type, '')
"""
LIST = f"""
SELECT {COLUMNS} FROM job_store_limits
WHERE (CAST(:store_id AS text) IS NULL OR store_id = CAST(:store_id AS text) OR store_id IS NULL)
ORDER BY store_id NULLS FIRST, type NULLS FIRST
"""
DELETE = """
DELETE FROM job_store_limits
WHERE coalesce(store_id, '') = coalesce(:store_id, '') AND coalesce(type, '') = coalesce(:type, '')
RETURNING store_id
"""
# a starts limit removed leaves claims recorded past their minute: nobody reads them, so they go now (rows a claim
# is deleting are skipped)
PRUNE_STARTS = """
DELETE FROM job_store_starts
WHERE id IN (SELECT id FROM job_store_starts WHERE claimed_at <= now() - interval '1 minute'
             ORDER BY id LIMIT 10000 FOR UPDATE SKIP LOCKED)
"""
EFFECTIVE = """
SELECT l.type, l.max_running, l.max_starts_per_minute, l.weight, l.openai_tokens_per_minute,
       coalesce(u.running, 0) AS running, coalesce(u.started, 0) AS started_last_minute
FROM jobs_flow_limits(ARRAY[CAST(:store_id AS text)]) AS l
LEFT JOIN (SELECT CASE WHEN GROUPING(x.type) = 1 THEN NULL ELSE x.type END AS type,
                  sum(x.running)::integer AS running, sum(x.started)::integer AS started
           FROM jobs_flow_usage(ARRAY[CAST(:store_id AS text)]) AS x
           GROUP BY ROLLUP (x.type)) AS u ON u.type IS NOT DISTINCT FROM l.type
ORDER BY l.type NULLS FIRST
"""
TOKEN_QUOTA = """
SELECT l.openai_tokens_per_minute FROM jobs_flow_limits(ARRAY[CAST(:store_id AS text)]) AS l WHERE l.type IS NULL
"""


def validate(body) -> dict:
    """{"store_id", "type"?, limit fields...} -> the row to PUT (every field present, None: not set)."""
    if not isinstance(body, dict):
        raise InvalidFlowInput("body", "The body must be an object {\"store_id\", \"type\"?, limits...}.")
    unknown = sorted(set(body) - {"store_id", "type", *FIELDS})
    if unknown:
        raise InvalidFlowInput(unknown[0], f"unknown field {unknown[0][:50]!r}: a limit has store_id, type, "
                                           + ", ".join(FIELDS))
    if "store_id" not in body:
        raise InvalidFlowInput("store_id", "store_id is required (null: every store, each on its own)")
    row = {"store_id": optional_name(body, "store_id", "a store"), "type": optional_name(body, "type", "a job type")}
    for name, (lo, hi) in FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi):
            raise InvalidFlowInput(name, f"{name} must be a whole number from {lo} to {hi}, or null")
        if value is not None and row["type"] is not None and name in PER_STORE_ONLY:
            raise InvalidFlowInput(name, f"{name} is per store: set it without a type")
        row[name] = value
    if all(row[name] is None for name in FIELDS):
        raise InvalidFlowInput("max_running", "give at least one of " + ", ".join(FIELDS)
                               + " (DELETE /limits removes a row)")
    return row


def put_limit(conn: Connection, row: dict, *, actor) -> tuple[dict, bool]:
    """Set the row of (store_id, type) to `row` (see validate), logged as `actor`'s (audit.py); returns (the row,
    whether it is new)."""
    values = {name: row.get(name) for name in ("store_id", "type", *FIELDS)}
    written = conn.execute(text(PUT), values).mappings().one_or_none()
    stored = plain(written if written is not None else conn.execute(text(CURRENT), values).mappings().one())
    created = bool(stored.pop("created"))
    audit.record(conn, actor, "limit.put", values, changed=int(written is not None))
    if stored["max_starts_per_minute"] is None:
        conn.execute(text(PRUNE_STARTS))
    return stored, created


def list_limits(conn: Connection, *, store_id: Optional[str] = None) -> list[dict]:
    """Every row (with store_id: that store's rows and the every-store rows)."""
    return [plain(row) for row in conn.execute(text(LIST), {"store_id": store_id}).mappings()]


def delete_limit(conn: Connection, *, store_id: Optional[str] = None, job_type: Optional[str] = None,
                 actor) -> bool:
    """Remove the row of (store_id, type), logged as `actor`'s (audit.py); True if it existed (nothing is logged if
    it did not)."""
    deleted = conn.execute(text(DELETE), {"store_id": store_id, "type": job_type}).first() is not None
    if deleted:
        conn.execute(text(PRUNE_STARTS))
        audit.record(conn, actor, "limit.remove", {"store_id": store_id, "type": job_type})
    return deleted


def effective_limits(conn: Connection, store_id: str) -> list[dict]:
    """What applies to one store now -- for the store as a whole (type None) and per type with a limit of its own,
    each field its own row's, else the every-store row's -- with what it is counted against: running (live
    leases) and started_last_minute (jobs claimed in the last minute)."""
    return [dict(row) for row in conn.execute(text(EFFECTIVE), {"store_id": store_id}).mappings()]


def token_quota(conn: Connection, store_id: Optional[str]) -> Optional[int]:
    """The store's openai_tokens_per_minute (its own, else the every-store row's); None: no quota."""
    if not store_id:
        return None
    return conn.execute(text(TOKEN_QUOTA), {"store_id": store_id}).scalar()
