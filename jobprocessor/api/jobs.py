"""The job API: enqueue (with workflow fields), list (keyset pages), read (with parents, children and steps), retry,
cancel."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from sqlalchemy.exc import IntegrityError

from .. import queries
from ..enqueue import validate_callback, validate_job, validate_jobs, write
from ..extensions import db
from ..job import JOB_STATUSES
from ..workflows import graph
from ..workflows.write import with_retry
from .auth import require_secret
from .errors import ApiError
from .job_json import job_to_dict
from .params import accepts, check_body_fields, choice_param, int_param, json_body, str_param

bp = Blueprint("jobs", __name__)

MAX_JOB_ID = 2**63 - 1


def _settings():
    return current_app.extensions["jobprocessor"].settings


@bp.post("/jobs")
@require_secret
@accepts()
def create_jobs():
    body = json_body(required=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a job object or {\"jobs\": [...]}.")
    if "jobs" in body:
        check_body_fields(body, ("jobs", "on_complete"))  # a batch body holds only "jobs" and "on_complete"
        rows = validate_jobs(body["jobs"], _settings())
        callback = validate_callback(body["on_complete"], _settings()) if body.get("on_complete") is not None \
            else None
        written = with_retry(db.engine, lambda conn: write(conn, rows, callback))
        results = written.jobs
        created = sum(1 for _, was_created in results if was_created)
        jobs = []
        for position, (job_id, was_created) in enumerate(results):
            entry = {"id": job_id, "created": was_created}
            if position in written.debounced:
                entry["debounced"] = True
            jobs.append(entry)
        payload = {"ids": [job_id for job_id, _ in results], "created": created,
                   "duplicates": len(results) - created, "jobs": jobs}
        if written.on_complete is not None:
            payload["on_complete"] = {"id": written.on_complete[0], "created": written.on_complete[1]}
        any_created = created or (written.on_complete is not None and written.on_complete[1])
        return jsonify(payload), 201 if any_created else 200
    row = validate_job(body, _settings())

    def enqueue_one(conn):
        written = write(conn, [row])
        return written, queries.get_job(conn, written.jobs[0][0])

    written, job = with_retry(db.engine, enqueue_one)
    (job_id, created), = written.jobs
    payload = {"id": job_id, "ids": [job_id], "created": created, "job": job_to_dict(job)}
    if written.debounced:
        payload["debounced"] = True
    return jsonify(payload), 201 if created else 200


@bp.get("/jobs")
@require_secret
@accepts(query=("status", "type", "store_id", "user_id", "batch_id", "limit", "after"))
def list_jobs():
    args = request.args
    status = choice_param("status", args.get("status"), JOB_STATUSES)
    limit = int_param("limit", args.get("limit"), 1, 500, 50)
    after = int_param("after", args.get("after"), 1, MAX_JOB_ID)
    with db.engine.connect() as conn:
        page, next_after = queries.list_jobs(
            conn, status=status, job_type=str_param("type", args.get("type")),
            store_id=str_param("store_id", args.get("store_id")), user_id=str_param("user_id", args.get("user_id")),
            batch_id=str_param("batch_id", args.get("batch_id")), after=after, limit=limit,
            max_bytes=_settings().MAX_PAGE_BYTES)
    return jsonify({"jobs": [job_to_dict(row) for row in page], "next_after": next_after})


def _job_id(raw: str) -> int:
    return int_param("job id", raw, 1, MAX_JOB_ID)


@bp.get("/jobs/<raw_id>")
@require_secret
@accepts()
def get_job(raw_id: str):
    with db.engine.connect() as conn:
        job = queries.get_job(conn, _job_id(raw_id))
        if job is None:
            raise ApiError(404, "not_found", f"No job {raw_id}.")
        links = graph.read(conn, job["id"])
    return jsonify({**job_to_dict(job), **links})


def _transition(raw_id: str, action, allowed: str):
    job_id = _job_id(raw_id)
    try:
        with db.engine.begin() as conn:
            job = action(conn, job_id)
            if job is None:
                current = queries.get_job(conn, job_id)
                if current is None:
                    raise ApiError(404, "not_found", f"No job {job_id}.")
                raise ApiError(409, "invalid_state", f"Job {job_id} is {current['status']}; only {allowed} jobs "
                                                     "can be changed this way.")
    except IntegrityError as exc:
        if getattr(exc.orig, "diag", None) is not None and exc.orig.diag.constraint_name == "jobs_singleton_key_idx":
            raise ApiError(409, "singleton_conflict", f"Job {job_id} cannot run again now: another job with its "
                                                      "singleton_key has not finished.") from None
        raise
    return jsonify(job_to_dict(job))


@bp.post("/jobs/<raw_id>/retry")
@require_secret
@accepts(body=())
def retry_job(raw_id: str):
    return _transition(raw_id, queries.retry_job, "failed or cancelled")


@bp.post("/jobs/<raw_id>/cancel")
@require_secret
@accepts(body=())
def cancel_job(raw_id: str):
    return _transition(raw_id, queries.cancel_job, "pending or waiting")
