"""Who may trigger /process-pending besides CRON_SECRET: one module per method, each a pure check of what the
request presents (qstash, google_oidc, timestamped_hmac, cron_secret), plus the per-process cache of Google's keys
(jwks) and the replay record shared by every process through PostgreSQL (replay_store).

A check never touches the database; only a credential whose signature verified is written to the replay record,
so guessing reaches PostgreSQL not at all. The order and the HTTP answers are in jobprocessor/api/auth.py.
"""
from __future__ import annotations

from ..config import MIN_SECRET_LENGTH, Settings

METHODS = ("cron_secret", "qstash", "google_oidc", "hmac")


def enabled_methods(settings: Settings) -> dict[str, bool]:
    """Which methods are on (never their secrets): for /healthz, the start-up log line and the auth itself."""
    return {
        # a secret shorter than the minimum never opens anything (config.py refuses it at start-up anyway)
        "cron_secret": len(settings.CRON_SECRET) >= MIN_SECRET_LENGTH,
        "qstash": bool(settings.QSTASH_CURRENT_SIGNING_KEY),
        "google_oidc": bool(settings.GOOGLE_OIDC_AUDIENCE and settings.GOOGLE_OIDC_ALLOWED_EMAILS),
        "hmac": len(settings.TRIGGER_HMAC_SECRET) >= MIN_SECRET_LENGTH,
    }
