"""POST /jobs/bulk: retry or cancel every job matching a filter, in batches (jobprocessor/bulk/), or count them
first with "dry_run": true. Each action (not a dry run) is recorded in the action log."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import bulk
from ..extensions import db
from .auth import require_secret
from .errors import ApiError
from .params import accepts, json_body

bp = Blueprint("bulk", __name__)
API_ACTOR = bulk.Actor("api", "cron_secret")


def bulk_error(exc: bulk.BulkError) -> ApiError:
    return ApiError(400, "invalid_field", exc.message, field=exc.field)


@bp.post("/jobs/bulk")
@require_secret
@accepts()  # no query parameters: a misspelt one is a 400 naming it (the body's fields are bulk.parse_request's)
def bulk_action():
    try:
        request = bulk.parse_request(json_body(required=True))
    except bulk.BulkError as exc:
        raise bulk_error(exc) from None
    result = bulk.run(db.engine, request, API_ACTOR)
    if request.dry_run:
        return jsonify({"matched": result.matched, "action": request.action, "dry_run": True,
                        "filter": request.filter.as_dict()})
    return jsonify({"changed": result.changed, "matched": result.matched, "action": request.action,
                    "dry_run": False, "filter": request.filter.as_dict(), "action_id": result.action_id})
