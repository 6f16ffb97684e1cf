"""POST /process-pending (and GET, the method Vercel Cron uses): the cron's entry point."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..extensions import db
from ..handlers import get_handler
from ..processor import process_pending
from .auth import require_secret
from .errors import ApiError
from .params import get_param, int_param, json_body, number_param, str_param

bp = Blueprint("cron", __name__)
MAX_LIMIT = 1_000_000  # jobs one call may claim over all its rounds


@bp.route("/process-pending", methods=["POST", "GET"])
@require_secret(trigger=True)
def process_pending_endpoint():
    settings = current_app.extensions["jobprocessor"].settings
    body = json_body(required=False) if request.method == "POST" else None
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object of parameters.")
    limit = int_param("limit", get_param("limit", body), 1, MAX_LIMIT, settings.JOBS_MAX_PER_RUN)
    budget_s = number_param("budget_s", get_param("budget_s", body), 1, 900, settings.JOBS_MAX_RUNTIME_S)
    job_type = str_param("type", get_param("type", body))
    if job_type is not None and get_handler(job_type) is None:
        raise ApiError(422, "unknown_type", f"unknown job type {job_type!r}: no handler is registered for it.")
    summary = process_pending(db.engine, settings, limit=limit, budget_s=budget_s, job_type=job_type,
                              app=current_app._get_current_object())
    return jsonify(summary.to_dict())
