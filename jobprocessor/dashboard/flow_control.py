"""Tenant flow control as the dashboard sees it (issue 11: pauses, per-store limits and weights, "why is this job
waiting?"), behind a feature check: until the database has these objects, each page and section says "not
available" and no action is offered.

THE PLUG-IN POINT. issue 11 builds the real objects; when it lands, make the names below match them (or replace
the bodies of these functions by calls to its module), and every page and action of the dashboard that uses flow
control works: the Pauses & limits page (add, edit, remove), the pauses/limits/weight columns of the Stores page and
a store's page, and the wait reasons of a job's page. Nothing else in the dashboard refers to these objects.
The shapes follow the contract (CONTRACT.md, "Added by the second round of issues"):
  pauses: id, type, store_id, created_at          (POST /pauses, GET /pauses, DELETE /pauses/<id>)
  limits: store_id (NULL: every store), type, max_running, max_starts_per_minute, weight, openai_tokens_per_minute
  wait reasons: code, message, until              (GET /jobs/<id>/wait)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection

PAUSES_TABLE = "job_pauses"
LIMITS_TABLE = "job_limits"
WAIT_REASONS_FUNCTION = "job_wait_reasons(bigint)"  # returns rows of (code, message, until)
LIMIT_FIELDS = ("max_running", "max_starts_per_minute", "weight", "openai_tokens_per_minute")

FEATURES = text("SELECT to_regclass(:pauses) IS NOT NULL AS pauses, to_regclass(:limits) IS NOT NULL AS limits, "
                "to_regprocedure(:wait) IS NOT NULL AS wait_reasons")


@dataclass(frozen=True)
class Features:
    pauses: bool = False
    limits: bool = False
    wait_reasons: bool = False

    @property
    def any(self) -> bool:
        return self.pauses or self.limits or self.wait_reasons


def features(conn: Connection) -> Features:
    row = conn.execute(FEATURES, {"pauses": PAUSES_TABLE, "limits": LIMITS_TABLE,
                                  "wait": WAIT_REASONS_FUNCTION}).one()
    return Features(bool(row.pauses), bool(row.limits), bool(row.wait_reasons))


# --- pauses --------------------------------------------------------------------------------------------------------

def list_pauses(conn: Connection, store_ids: Optional[list[str]] = None) -> list[dict]:
    sql = f"SELECT id, type, store_id, created_at FROM {PAUSES_TABLE}"
    params = {}
    if store_ids is not None:
        # a store's own pauses and those that apply to every store
        sql += " WHERE store_id IS NULL OR store_id = ANY(CAST(:stores AS text[]))"
        from ..queries import array_literal

        params["stores"] = array_literal(store_ids)
    return [dict(row) for row in conn.execute(text(sql + " ORDER BY created_at DESC, id DESC LIMIT 1000"),
                                              params).mappings()]


def add_pause(conn: Connection, job_type: Optional[str], store_id: Optional[str]) -> dict:
    row = conn.execute(text(f"INSERT INTO {PAUSES_TABLE} (type, store_id) VALUES (:type, :store_id) "
                            "RETURNING id, type, store_id, created_at"),
                       {"type": job_type, "store_id": store_id}).mappings().one()
    return dict(row)


def remove_pause(conn: Connection, pause_id: int) -> bool:
    return conn.execute(text(f"DELETE FROM {PAUSES_TABLE} WHERE id = :id RETURNING id"),
                        {"id": pause_id}).first() is not None


# --- limits and weights --------------------------------------------------------------------------------------------

def list_limits(conn: Connection, store_ids: Optional[list[str]] = None) -> list[dict]:
    sql = f"SELECT store_id, type, {', '.join(LIMIT_FIELDS)} FROM {LIMITS_TABLE}"
    params = {}
    if store_ids is not None:
        sql += " WHERE store_id IS NULL OR store_id = ANY(CAST(:stores AS text[]))"
        from ..queries import array_literal

        params["stores"] = array_literal(store_ids)
    return [dict(row) for row in conn.execute(text(sql + " ORDER BY store_id NULLS FIRST, type NULLS FIRST "
                                                         "LIMIT 1000"), params).mappings()]


def put_limit(conn: Connection, store_id: Optional[str], job_type: Optional[str], values: dict) -> None:
    """Set (or replace) the limits of one (store, type); values: LIMIT_FIELDS, None for "no limit"."""
    conn.execute(text(f"DELETE FROM {LIMITS_TABLE} WHERE store_id IS NOT DISTINCT FROM :store_id "
                      "AND type IS NOT DISTINCT FROM :type"), {"store_id": store_id, "type": job_type})
    conn.execute(text(f"INSERT INTO {LIMITS_TABLE} (store_id, type, {', '.join(LIMIT_FIELDS)}) "
                      f"VALUES (:store_id, :type, {', '.join(':' + f for f in LIMIT_FIELDS)})"),
                 {"store_id": store_id, "type": job_type, **{f: values.get(f) for f in LIMIT_FIELDS}})


def delete_limit(conn: Connection, store_id: Optional[str], job_type: Optional[str]) -> bool:
    return conn.execute(text(f"DELETE FROM {LIMITS_TABLE} WHERE store_id IS NOT DISTINCT FROM :store_id "
                             "AND type IS NOT DISTINCT FROM :type RETURNING 1"),
                        {"store_id": store_id, "type": job_type}).first() is not None


# --- why is this job waiting? --------------------------------------------------------------------------------------

def wait_reasons(conn: Connection, job_id: int) -> list[dict]:
    name = WAIT_REASONS_FUNCTION.split("(")[0]
    return [dict(row) for row in conn.execute(text(f"SELECT code, message, until FROM {name}(:id)"),
                                              {"id": job_id}).mappings()]
