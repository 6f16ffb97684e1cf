"""GET /batches/<batch_id>: one batch's jobs counted per status, and its progress, for a front end's progress bar.

A batch is the jobs that share a `batch_id` (POST /jobs with {"jobs": [...]} creates up to 1000 in one request;
a batch may span requests). The counts come from one query that reads jobs_batch_idx (batch_id, status) only;
`on_complete` is the batch's callback job, if it has one (id and status).
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import queries
from ..extensions import db
from ..job import FINISHED_STATUSES, JOB_STATUSES
from ..workflows import graph
from .auth import require_secret
from .errors import ApiError
from .params import accepts, str_param

bp = Blueprint("batches", __name__)


@bp.get("/batches/<raw_id>")
@require_secret
@accepts()
def get_batch(raw_id: str):
    batch_id = str_param("batch_id", raw_id)
    with db.engine.connect() as conn:
        counts = queries.batch_counts(conn, batch_id)
        on_complete = graph.batch_callback(conn, batch_id)
    total = sum(counts.values())
    if total == 0:
        raise ApiError(404, "not_found", f"No jobs in batch {batch_id!r}.")
    counts = {status: counts.get(status, 0) for status in JOB_STATUSES}
    finished = sum(counts[status] for status in FINISHED_STATUSES)
    # progress: the share of the batch in a final state (failed jobs included: they will not run again)
    return jsonify({"batch_id": batch_id, "total": total, "counts": counts, "finished": finished,
                    "progress": finished / total, "done": finished == total, "on_complete": on_complete})
