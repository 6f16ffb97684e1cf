"""GET /rate-limiter/stats: the shared OpenAI limiter's figures (the same ones /metrics exports and each call logs)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..ratelimit import rate_limiter_stats
from .auth import require_secret
from .params import accepts

bp = Blueprint("ratelimiter", __name__)


@bp.get("/rate-limiter/stats")
@require_secret
@accepts()
def stats():
    return jsonify(rate_limiter_stats())
