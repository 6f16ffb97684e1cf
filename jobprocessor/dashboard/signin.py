"""Sign-in: which role a presented secret opens (constant-time comparisons, both secrets always compared), and
the throttle of failed attempts per client address, shared by every process through PostgreSQL
(dashboard_signin_failures, sql/080_dashboard_v1.sql)."""
from __future__ import annotations

import hmac
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..config import Settings
from .session import OPERATOR, READONLY

WINDOW = "10 minutes"
PRUNE_BATCH = 100

RECENT_FAILURES = text(f"""
SELECT count(*) FROM dashboard_signin_failures WHERE client = :client AND at > now() - interval '{WINDOW}'
""")
PRUNE = text(f"""
DELETE FROM dashboard_signin_failures
WHERE ctid IN (SELECT ctid FROM dashboard_signin_failures WHERE at < now() - interval '{WINDOW}'
               ORDER BY at LIMIT :batch)
""")
RECORD = text("INSERT INTO dashboard_signin_failures (client) VALUES (:client)")


def role_for(settings: Settings, presented: str) -> Optional[str]:
    """The role `presented` opens, or None. Both comparisons always run, so the time taken tells nothing."""
    given = presented.encode("utf-8", "replace")
    operator = bool(settings.DASHBOARD_SECRET) & hmac.compare_digest(given, settings.DASHBOARD_SECRET.encode())
    readonly = bool(settings.DASHBOARD_READONLY_SECRET) & hmac.compare_digest(
        given, settings.DASHBOARD_READONLY_SECRET.encode())
    return OPERATOR if operator else READONLY if readonly else None


def client_key(remote_addr: Optional[str]) -> str:
    return (remote_addr or "unknown")[:100]


def throttled(engine: Engine, client: str, limit: int) -> bool:
    with engine.connect() as conn:
        return int(conn.execute(RECENT_FAILURES, {"client": client}).scalar_one()) >= limit


def record_failure(engine: Engine, client: str) -> None:
    with engine.begin() as conn:
        conn.execute(PRUNE, {"batch": PRUNE_BATCH})
        conn.execute(RECORD, {"client": client})
