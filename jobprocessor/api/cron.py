"""POST /process-pending (and GET, the method Vercel Cron uses): the cron's entry point."""
from __future__ import annotations

import functools

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import MethodNotAllowed

from ..extensions import db
from ..handlers import get_handler
from ..processor import process_pending
from .auth import require_secret
from .errors import ApiError
from .params import accepts, check_body_fields, int_param, json_body, number_param, raw_body, str_param

bp = Blueprint("cron", __name__)
MAX_LIMIT = 1_000_000  # jobs one call may claim over all its rounds
PARAMETERS = ("limit", "budget_s", "type")


def refuse_head(view):
    """Flask answers HEAD on every GET route by running the GET view: here that would run jobs. A HEAD runs
    nothing, not even the auth: 405 with Allow."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if request.method == "HEAD":
            raise MethodNotAllowed(valid_methods=["GET", "POST"])
        return view(*args, **kwargs)

    return wrapper


def _parameters(source: dict, settings):
    return (int_param("limit", source.get("limit"), 1, MAX_LIMIT, settings.JOBS_MAX_PER_RUN),
            number_param("budget_s", source.get("budget_s"), 1, 900, settings.JOBS_MAX_RUNTIME_S),
            str_param("type", source.get("type")))


@bp.route("/process-pending", methods=["POST", "GET"])
@refuse_head
@require_secret(trigger=True)
@accepts(query=PARAMETERS)
def process_pending_endpoint():
    settings = current_app.extensions["jobprocessor"].settings
    body = json_body(required=False) if request.method == "POST" else None
    # a body of JSON `null` is a body that is not an object (only an empty body means "no parameters")
    if (body is not None or (request.method == "POST" and raw_body().strip())) and not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object of parameters.")
    check_body_fields(body, PARAMETERS)
    query = {name: request.args[name] for name in PARAMETERS if name in request.args}
    # each source is checked whole, so a bad value in the body is a 400 (or 422) even where the query string wins
    for source in (body or {}, query):
        job_type = _parameters(source, settings)[2]
        if job_type is not None and get_handler(job_type) is None:
            raise ApiError(422, "unknown_type", f"unknown job type {job_type!r}: no handler is registered for it.")
    limit, budget_s, job_type = _parameters({**(body or {}), **query}, settings)
    summary = process_pending(db.engine, settings, limit=limit, budget_s=budget_s, job_type=job_type,
                              app=current_app._get_current_object())
    return jsonify(summary.to_dict())
