"""The shared-secret check every endpoint but /healthz passes before it does anything else (no query first)."""
from __future__ import annotations

import functools
import hmac

from flask import current_app, request

from ..config import MIN_SECRET_LENGTH
from .errors import ApiError


def _presented_secret() -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-Cron-Secret")


def check_secret() -> None:
    secret = current_app.extensions["jobprocessor"].settings.CRON_SECRET
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        # fail closed: an unset or weak secret never opens the door
        raise ApiError(503, "secret_not_configured",
                       f"CRON_SECRET is not set or shorter than {MIN_SECRET_LENGTH} characters; "
                       "protected endpoints are disabled until it is set.")
    presented = _presented_secret()
    # compare_digest takes the same time wherever the strings differ; bytes so any character set is comparable
    if presented is None or not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                                    secret.encode("utf-8")):
        raise ApiError(401, "unauthorized",
                       "Missing or wrong secret: send 'Authorization: Bearer <CRON_SECRET>' or 'X-Cron-Secret'.",
                       {"WWW-Authenticate": 'Bearer realm="jobprocessor"'})


def require_secret(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        check_secret()
        return view(*args, **kwargs)

    return wrapper
