"""GET /healthz: no secret; 200 when the database answers, else 503."""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return jsonify(status="ok", database="up")
