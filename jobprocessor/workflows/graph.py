"""What GET /jobs/<id> shows beside the job's row: its parents and children (the first SHOWN of each, by id, and how
many there are), its first SHOWN_STEPS finished steps (each at most JOBS_MAX_STEP_BYTES: the answer stays bounded),
and the batch whose on_complete job it is. One statement."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

SHOWN = 100
SHOWN_STEPS = 20

# A deleted (archived) parent still shows, with status null: the edge stays until its child goes.
LINKS = """
SELECT
    (SELECT coalesce(json_agg(json_build_object('id', p.parent_id, 'type', p.type, 'status', p.status,
                                                'resolved', p.resolved) ORDER BY p.parent_id), '[]')
     FROM (SELECT d.parent_id, d.resolved, j.type, j.status
           FROM job_dependencies d LEFT JOIN jobs j ON j.id = d.parent_id
           WHERE d.child_id = :id ORDER BY d.parent_id LIMIT :shown) AS p) AS parents,
    (SELECT count(*) FROM job_dependencies d WHERE d.child_id = :id) AS parents_total,
    (SELECT coalesce(json_agg(json_build_object('id', c.child_id, 'type', c.type, 'status', c.status)
                              ORDER BY c.child_id), '[]')
     FROM (SELECT d.child_id, j.type, j.status
           FROM job_dependencies d LEFT JOIN jobs j ON j.id = d.child_id
           WHERE d.parent_id = :id ORDER BY d.child_id LIMIT :shown) AS c) AS children,
    (SELECT count(*) FROM job_dependencies d WHERE d.parent_id = :id) AS children_total,
    (SELECT coalesce(json_agg(json_build_object('name', s.name, 'result', s.result, 'created_at', s.created_at)
                              ORDER BY s.created_at, s.name), '[]')
     FROM (SELECT name, result, created_at FROM job_steps WHERE job_id = :id
           ORDER BY created_at, name LIMIT :shown_steps) AS s) AS steps,
    (SELECT count(*) FROM job_steps WHERE job_id = :id) AS steps_total,
    (SELECT batch_id FROM job_batch_callbacks WHERE job_id = :id) AS on_complete_of
"""

BATCH_CALLBACK = """
SELECT b.job_id AS id, j.status FROM job_batch_callbacks b LEFT JOIN jobs j ON j.id = b.job_id
WHERE b.batch_id = :batch_id
"""


def read(conn: Connection, job_id: int) -> dict:
    row = conn.execute(text(LINKS), {"id": job_id, "shown": SHOWN, "shown_steps": SHOWN_STEPS}).mappings().one()
    return {key: row[key] for key in ("parents", "parents_total", "children", "children_total", "steps",
                                      "steps_total", "on_complete_of")}


def batch_callback(conn: Connection, batch_id: str):
    """The batch's on_complete job as {"id", "status"}, or None."""
    row = conn.execute(text(BATCH_CALLBACK), {"batch_id": batch_id}).mappings().first()
    return dict(row) if row is not None else None
