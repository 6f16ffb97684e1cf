"""POST /process-pending (and GET, the method Vercel Cron uses): the cron's entry point."""
from __future__ import annotations

import functools

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import MethodNotAllowed

from ..extensions import db
from ..handler_registry import get_handler
from ..processor import process_pending
from .auth import require_secret
from .errors import ApiError
from .params import accepts, check_body_fields, int_param, number_param, object_body, str_param

bp = Blueprint("process_pending", __name__)
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


# In a JSON body the values have JSON types, as /openapi.json says (RunParameters): numbers as numbers, null for the
# default. Only the query string is text, where an empty value means the default.
_BODY_TYPES = {"limit": (int,), "budget_s": (int, float), "type": (str,)}


def _check_body_types(body: dict) -> None:
    for name, kinds in _BODY_TYPES.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) or value == ""):
            kind = "a non-empty string" if name == "type" else "a JSON number"
            raise ApiError(400, "invalid_parameter", f"{name} in the body must be {kind} or null (the default).",
                           field=name)


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
    # only an empty body means "no parameters": JSON null, a list, a number are refused
    body = object_body("The body must be a JSON object of parameters.") if request.method == "POST" else None
    check_body_fields(body, PARAMETERS)
    _check_body_types(body or {})
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
