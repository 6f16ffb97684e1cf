"""What operators look at: the job_queue_health view and the alerts of job_queue_alerts (sql/052_queue_health_v1.sql),
read as plain data for GET /queue/health and `flask jobs health`."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

HEALTH = ("SELECT status, count, avg_duration_seconds, latest_created_at, oldest_created_at, oldest_age_seconds "
          "FROM job_queue_health")
ALERTS = ("SELECT alert, severity, value, threshold, message FROM job_queue_alerts "
          "ORDER BY severity = 'critical' DESC, alert")
SEVERITY_ORDER = ("ok", "warning", "critical")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class QueueHealth:
    statuses: list[dict]
    alerts: list[dict]

    @property
    def status(self) -> str:
        """ok, or the worst severity among the firing alerts."""
        return max((a["severity"] for a in self.alerts), key=SEVERITY_ORDER.index, default="ok")

    def as_dict(self) -> dict:
        return {"status": self.status, "health": self.statuses, "alerts": self.alerts}


def read(engine: Engine) -> QueueHealth:
    """Both views in one read-only transaction, so the rows and the alerts describe the same moment."""
    with engine.connect() as conn, conn.begin():
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        statuses = [{k: _plain(v) for k, v in row.items()} for row in conn.execute(text(HEALTH)).mappings()]
        alerts = [{k: _plain(v) for k, v in row.items()} for row in conn.execute(text(ALERTS)).mappings()]
    return QueueHealth(statuses, alerts)
