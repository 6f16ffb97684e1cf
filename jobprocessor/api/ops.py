"""For operators: GET /queue/health (the health view's rows and the alerts firing now), GET /ticks (what the
latest /process-pending calls did) and GET /metrics (Prometheus text). All need the secret, like every endpoint but
/healthz."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import metrics, queue_health, ticks
from ..extensions import db
from .auth import require_secret
from .params import accepts, int_param

bp = Blueprint("ops", __name__)


@bp.get("/queue/health")
@require_secret
@accepts()
def health():
    return jsonify(queue_health.read(db.engine).as_dict())


@bp.get("/ticks")
@require_secret
@accepts(query=("limit", "before"))
def recent_ticks():
    from flask import request

    limit = int_param("limit", request.args.get("limit"), 1, 500, 50)
    before = int_param("before", request.args.get("before"), 1, 2**63 - 1, None)
    with db.engine.connect() as conn:
        rows = ticks.recent(conn, limit=limit, before=before)
        age = ticks.last_tick_age_s(conn)
    for row in rows:
        for key in ("started_at", "ended_at"):
            row[key] = row[key].isoformat() if row[key] is not None else None
        row["duration_s"] = float(row["duration_s"])
    return jsonify(ticks=rows, last_tick_age_s=age,
                   next_before=rows[-1]["id"] if len(rows) == limit else None)


@bp.get("/metrics")
@require_secret
@accepts()
def prometheus_metrics():
    return Response(metrics.render(db.engine), mimetype=None, content_type=metrics.CONTENT_TYPE)
