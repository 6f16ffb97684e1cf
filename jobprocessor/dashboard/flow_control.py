"""Tenant flow control as the dashboard sees it: pauses, per-store limits and weights, and "why is this job
waiting?", through the same functions as the HTTP API and the CLI (jobprocessor/flow: pauses.py, limits.py,
wait.py), so a pause or a limit set here is validated, stored and read exactly as `POST /pauses` and `PUT /limits`
do it, and a job's page shows what `GET /jobs/<id>/wait` says. Used by the Pauses & limits page (add, edit,
remove), the pauses/limits/weight columns of the Stores page and a store's page, and a job's page.

features() stays as a guard for a database whose migrations have not reached revision 0016_flow_control (a
dashboard deployed before its `flask db upgrade`): each page then says "not available" and offers no action.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..flow import InvalidFlowInput, limits, pauses, plain, wait
from ..pgarray import array_literal

LIMIT_FIELDS = tuple(limits.FIELDS)

FEATURES = text("SELECT to_regclass('job_pauses') IS NOT NULL AS pauses, "
                "to_regclass('job_store_limits') IS NOT NULL AS limits, "
                "to_regprocedure('jobs_wait_reasons(bigint, text[])') IS NOT NULL AS wait_reasons")

# a store's own pauses and the pauses of a type everywhere (store_id NULL): what holds its jobs
STORE_PAUSES = """
SELECT id, type, store_id, created_at FROM job_pauses
WHERE store_id IS NULL OR store_id = ANY (CAST(:stores AS text[]))
ORDER BY id LIMIT 1000
"""
STORE_LIMITS = f"""
SELECT store_id, type, {", ".join(LIMIT_FIELDS)} FROM job_store_limits
WHERE store_id IS NULL OR store_id = ANY (CAST(:stores AS text[]))
ORDER BY store_id NULLS FIRST, type NULLS FIRST LIMIT 1000
"""

__all__ = ["InvalidFlowInput", "LIMIT_FIELDS", "Features", "features", "list_pauses", "add_pause", "remove_pause",
           "list_limits", "put_limit", "delete_limit", "wait_reasons"]


@dataclass(frozen=True)
class Features:
    pauses: bool = False
    limits: bool = False
    wait_reasons: bool = False

    @property
    def any(self) -> bool:
        return self.pauses or self.limits or self.wait_reasons


def features(conn: Connection) -> Features:
    row = conn.execute(FEATURES).one()
    return Features(bool(row.pauses), bool(row.limits), bool(row.wait_reasons))


# --- pauses --------------------------------------------------------------------------------------------------------

def list_pauses(conn: Connection, store_ids: Optional[list[str]] = None) -> list[dict]:
    """Every pause; with store_ids, those that hold these stores' jobs (their own, and a type's everywhere)."""
    if store_ids is None:
        return pauses.list_pauses(conn)
    return [plain(row) for row in conn.execute(text(STORE_PAUSES), {"stores": array_literal(store_ids)}).mappings()]


def add_pause(conn: Connection, job_type: Optional[str], store_id: Optional[str], actor) -> dict:
    """POST /pauses's rules (InvalidFlowInput for a bad one); the existing pause when it is there already. Logged
    as `actor`'s, as every path logs it (jobprocessor/flow/audit.py)."""
    valid_type, valid_store = pauses.validate({"type": job_type, "store_id": store_id})
    return pauses.add_pause(conn, job_type=valid_type, store_id=valid_store, actor=actor)[0]


def remove_pause(conn: Connection, pause_id: int, actor) -> bool:
    return pauses.remove_pause(conn, pause_id, actor=actor)


# --- limits and weights --------------------------------------------------------------------------------------------

def list_limits(conn: Connection, store_ids: Optional[list[str]] = None) -> list[dict]:
    """Every row; with store_ids, these stores' rows and the every-store rows."""
    if store_ids is None:
        return limits.list_limits(conn)
    return [plain(row) for row in conn.execute(text(STORE_LIMITS), {"stores": array_literal(store_ids)}).mappings()]


def put_limit(conn: Connection, store_id: Optional[str], job_type: Optional[str], values: dict, actor) -> None:
    """PUT /limits: set (or replace) the row of (store, type); values: LIMIT_FIELDS, None for "not set". Logged as
    `actor`'s."""
    limits.put_limit(conn, limits.validate({"store_id": store_id, "type": job_type, **values}), actor=actor)


def delete_limit(conn: Connection, store_id: Optional[str], job_type: Optional[str], actor) -> bool:
    return limits.delete_limit(conn, store_id=store_id, job_type=job_type, actor=actor)


# --- why is this job waiting? --------------------------------------------------------------------------------------

def wait_reasons(conn: Connection, job_id: int) -> list[dict]:
    """GET /jobs/<id>/wait's reasons (code, message, until?, details), with this process's handler types."""
    from ..handler_registry import registered_types

    body = wait.wait_reasons(conn, job_id, registered_types())
    return [] if body is None else body["reasons"]
