"""For operators: GET /queue/health (the health view's rows and the alerts firing now) and GET /metrics
(Prometheus text). Both need the secret, like every endpoint but /healthz."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import metrics, queue_health
from ..extensions import db
from .auth import require_secret

bp = Blueprint("ops", __name__)


@bp.get("/queue/health")
@require_secret
def health():
    return jsonify(queue_health.read(db.engine).as_dict())


@bp.get("/metrics")
@require_secret
def prometheus_metrics():
    return Response(metrics.render(db.engine), mimetype=None, content_type=metrics.CONTENT_TYPE)
