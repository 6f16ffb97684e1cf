"""GET /healthz: no secret; 200 when the database answers, else 503. Also says which auth methods are on (never
their secrets), so an operator can see that a scheduler's method is configured where it calls, and says so when
the protected endpoints are disabled (CRON_SECRET unset: they answer 503, fail closed) although this one is 200."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..extensions import db
from ..triggers import enabled_methods
from .params import accepts

bp = Blueprint("health", __name__)


def _warnings(methods: dict) -> list[str]:
    if methods["cron_secret"]:
        return []
    signed = [name for name, on in methods.items() if on and name != "cron_secret"]
    if signed:
        return [f"CRON_SECRET is not set: every endpoint but /healthz and /process-pending answers 503 (fail "
                f"closed); /process-pending admits {', '.join(signed)} only"]
    return ["CRON_SECRET is not set: every endpoint but /healthz answers 503 (fail closed) until it is set"]


@bp.get("/healthz")
@accepts()
def healthz():
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    methods = enabled_methods(current_app.extensions["jobprocessor"].settings)
    warnings = _warnings(methods)
    return jsonify(status="ok", database="up", api="enabled" if methods["cron_secret"] else "disabled",
                   auth=methods, warnings=warnings)
