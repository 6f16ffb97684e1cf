"""GET /rate-limiter/stats: the shared OpenAI limiter's figures (the same ones /metrics exports and each call logs)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..ratelimit import rate_limiter_stats
from .auth import require_secret

bp = Blueprint("ratelimiter", __name__)


@bp.get("/rate-limiter/stats")
@require_secret
def stats():
    return jsonify(rate_limiter_stats())
