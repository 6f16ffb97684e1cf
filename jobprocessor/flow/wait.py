"""Why is this job waiting? One SQL function, jobs_wait_reasons() (sql/060_job_wait_v1.sql), read here for
GET /jobs/<id>/wait, `flask jobs wait <id>` and the dashboard."""
from __future__ import annotations

from typing import Optional, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..pgarray import array_literal

WAIT = """
SELECT j.status, w.code, w.message, w.until, w.details
FROM jobs j
LEFT JOIN LATERAL jobs_wait_reasons(j.id, CAST(:handler_types AS text[])) AS w ON true
WHERE j.id = :id
"""


def wait_reasons(conn: Connection, job_id: int, handler_types: Optional[Sequence[str]] = None) -> Optional[dict]:
    """{"job_id", "status", "reasons": [{"code", "message", "until"?, "details"}]} (None: no such job).
    handler_types: the job types this process has handlers for (registered_types()), so a job of another type
    says no_handler; None: not checked."""
    rows = conn.execute(text(WAIT), {"id": job_id, "handler_types": None if handler_types is None
                                     else array_literal(sorted(handler_types))}).mappings().all()
    if not rows:
        return None
    reasons = []
    for row in rows:
        if row["code"] is None:
            continue
        reason = {"code": row["code"], "message": row["message"], "details": row["details"] or {}}
        if row["until"] is not None:
            reason["until"] = row["until"].isoformat()
        reasons.append(reason)
    return {"job_id": job_id, "status": rows[0]["status"], "reasons": reasons}
