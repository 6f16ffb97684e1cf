"""The OpenAI rate limit shared by every process and instance: a pure core (core.py), the server's headers
(headers.py), its PostgreSQL store (store.py) and the handler-side acquire/settle (limiter.py)."""
from __future__ import annotations

from .core import Limits, ServerView, Settlement
from .limiter import Grant, SharedLimiter
from .output_stats import OutputStatsStore
from .store import DEFAULT_NAME, LimiterStore


def rate_limiter_stats(engine=None, settings=None) -> dict:
    """The shared limiter's figures as one dict (what GET /rate-limiter/stats returns and /metrics exports):
    requests_used / tokens_used (usage) / tokens_charged (what OpenAI counts) over the last window_s seconds,
    requests_limit / tokens_limit, requests_utilisation_pct / tokens_utilisation_pct (charged over the limit),
    waiting_jobs, requests_in_flight, tokens_in_flight, throttled_total, hold_s, next_slot_s, totals, the server's
    last remaining figures, and output_caps: per job type and model, the max_completion_tokens calls send now.
    Defaults to the current app's engine and settings (needs an app context then)."""
    if engine is None or settings is None:
        from flask import current_app

        from ..extensions import db

        engine = engine if engine is not None else db.engine
        settings = settings if settings is not None else current_app.extensions["jobprocessor"].settings
    limits = Limits(settings.OPENAI_RPM, settings.OPENAI_TPM)
    return {"limiter": DEFAULT_NAME, **LimiterStore(engine).stats(limits),
            "output_caps": OutputStatsStore(engine).summary(settings.OPENAI_MAX_OUTPUT_TOKENS)}


__all__ = ["Limits", "ServerView", "Settlement", "Grant", "SharedLimiter", "LimiterStore", "OutputStatsStore",
           "rate_limiter_stats", "DEFAULT_NAME"]
