"""GET /healthz: no secret; 200 when the database answers, else 503. Also says which auth methods are on (never
their secrets), so an operator can see that a scheduler's method is configured where it calls."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..extensions import db
from ..triggers import enabled_methods

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return jsonify(status="ok", database="up", auth=enabled_methods(current_app.extensions["jobprocessor"].settings))
