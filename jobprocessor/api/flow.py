"""Tenant flow control over HTTP: pauses (POST/GET /pauses, DELETE /pauses/<id>), per-store limits (PUT/GET/DELETE
/limits) and why a job waits (GET /jobs/<id>/wait). Each is one small function of jobprocessor.flow, the same the
CLI and the dashboard call; each change is logged in the action log as the API's (jobprocessor/flow/audit.py)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..extensions import db
from ..flow import limits, pauses, wait
from ..handlers import registered_types
from .auth import require_secret
from .bulk import API_ACTOR  # who acts over HTTP: whoever holds the cron secret
from .errors import ApiError
from .params import accepts, int_param, json_body, str_param

bp = Blueprint("flow", __name__)

MAX_ID = 2**63 - 1


@bp.post("/pauses")
@require_secret
@accepts()  # a misspelt query parameter is a 400 naming it
def add_pause():
    job_type, store_id = pauses.validate(json_body(required=True))
    with db.engine.begin() as conn:
        pause, created = pauses.add_pause(conn, job_type=job_type, store_id=store_id, actor=API_ACTOR)
    return jsonify(pause), 201 if created else 200


@bp.get("/pauses")
@require_secret
@accepts(query=("type", "store_id"))  # a misspelt query parameter is a 400 naming it
def list_pauses():
    with db.engine.connect() as conn:
        rows = pauses.list_pauses(conn, job_type=str_param("type", request.args.get("type")),
                                  store_id=str_param("store_id", request.args.get("store_id")))
    return jsonify({"pauses": rows})


@bp.delete("/pauses/<raw_id>")
@require_secret
@accepts()  # a misspelt query parameter is a 400 naming it
def remove_pause(raw_id: str):
    pause_id = int_param("pause id", raw_id, 1, MAX_ID)
    with db.engine.begin() as conn:
        if not pauses.remove_pause(conn, pause_id, actor=API_ACTOR):
            raise ApiError(404, "not_found", f"No pause {pause_id}.")
    return "", 204


@bp.put("/limits")
@require_secret
@accepts()  # a misspelt query parameter is a 400 naming it
def put_limit():
    row = limits.validate(json_body(required=True))
    with db.engine.begin() as conn:
        stored, created = limits.put_limit(conn, row, actor=API_ACTOR)
    return jsonify(stored), 201 if created else 200


@bp.get("/limits")
@require_secret
@accepts(query=("store_id",))  # a misspelt query parameter is a 400 naming it
def list_limits():
    store_id = str_param("store_id", request.args.get("store_id"))
    with db.engine.connect() as conn:
        body = {"limits": limits.list_limits(conn, store_id=store_id)}
        if store_id is not None:
            body["effective"] = limits.effective_limits(conn, store_id)
    return jsonify(body)


@bp.delete("/limits")
@require_secret
@accepts(query=("store_id", "type"))  # a misspelt query parameter is a 400 naming it
def delete_limit():
    store_id = str_param("store_id", request.args.get("store_id"))
    job_type = str_param("type", request.args.get("type"))
    with db.engine.begin() as conn:
        if not limits.delete_limit(conn, store_id=store_id, job_type=job_type, actor=API_ACTOR):
            what = f"store {store_id}" if store_id else "every store"
            raise ApiError(404, "not_found", f"No limit for {what}{f', type {job_type}' if job_type else ''}.")
    return "", 204


@bp.get("/jobs/<raw_id>/wait")
@require_secret
@accepts()  # a misspelt query parameter is a 400 naming it
def job_wait(raw_id: str):
    job_id = int_param("job id", raw_id, 1, MAX_ID)
    with db.engine.connect() as conn:
        reasons = wait.wait_reasons(conn, job_id, registered_types())
    if reasons is None:
        raise ApiError(404, "not_found", f"No job {job_id}.")
    return jsonify(reasons)
