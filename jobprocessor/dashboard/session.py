"""The dashboard's session: a signed cookie (itsdangerous, keyed by DASHBOARD_SESSION_KEY) that holds the role and
the CSRF token, nothing else. HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Secure
when the request came over HTTPS, Path=/dashboard. Changing a dashboard secret signs out the sessions it opened:
each session carries a fingerprint of the secret it was opened with (an HMAC under the signing key, not the secret).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional

from flask import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import Settings

COOKIE = "jobprocessor_dashboard"
SIGNIN_COOKIE = "jobprocessor_dashboard_signin"  # the sign-in form's own CSRF token, before any session exists
PATH = "/dashboard"
OPERATOR, READONLY = "operator", "readonly"
SIGNIN_FORM_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Session:
    role: str
    csrf: str

    @property
    def may_act(self) -> bool:
        return self.role == OPERATOR


def secret_of(settings: Settings, role: str) -> str:
    return settings.DASHBOARD_SECRET if role == OPERATOR else settings.DASHBOARD_READONLY_SECRET


def _fingerprint(settings: Settings, role: str) -> str:
    return hmac.new(settings.DASHBOARD_SESSION_KEY.encode(), f"{role}:{secret_of(settings, role)}".encode(),
                    hashlib.sha256).hexdigest()[:24]


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.DASHBOARD_SESSION_KEY, salt=f"jobprocessor.dashboard.{purpose}")


def is_https(request: Request, settings: Settings) -> bool:
    """Over HTTPS here, or behind a proxy that says so (it can only make the cookie stricter)."""
    return (request.is_secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip() == "https"
            or settings.TRIGGER_PUBLIC_URL.startswith("https://"))


def _set(response: Response, request: Request, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PATH, httponly=True, samesite="Strict",
                        secure=is_https(request, settings))


def read(request: Request, settings: Settings) -> Optional[Session]:
    raw = request.cookies.get(COOKIE)
    if not raw or not settings.DASHBOARD_SESSION_KEY:
        return None
    try:
        data = _serializer(settings, "session").loads(raw, max_age=int(settings.DASHBOARD_SESSION_HOURS * 3600))
    except BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict) or data.get("role") not in (OPERATOR, READONLY):
        return None
    role = data["role"]
    if not secret_of(settings, role) or not hmac.compare_digest(str(data.get("fp", "")), _fingerprint(settings, role)):
        return None  # that role's secret was changed or removed since
    return Session(role, str(data.get("csrf", "")))


def open_session(response: Response, request: Request, settings: Settings, role: str) -> Session:
    session = Session(role, secrets.token_urlsafe(32))
    value = _serializer(settings, "session").dumps({"role": role, "csrf": session.csrf,
                                                   "fp": _fingerprint(settings, role)})
    _set(response, request, settings, COOKIE, value, int(settings.DASHBOARD_SESSION_HOURS * 3600))
    response.delete_cookie(SIGNIN_COOKIE, path=PATH)
    return session


def close_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Strict")


def signin_token(request: Request, settings: Settings, response: Response) -> str:
    """The sign-in form's CSRF token (double submit: in a signed cookie and in the form)."""
    token = secrets.token_urlsafe(32)
    _set(response, request, settings, SIGNIN_COOKIE, _serializer(settings, "signin").dumps(token),
         SIGNIN_FORM_MAX_AGE_S)
    return token


def signin_token_ok(request: Request, settings: Settings, presented: Optional[str]) -> bool:
    raw = request.cookies.get(SIGNIN_COOKIE)
    if not raw or not presented:
        return False
    try:
        token = _serializer(settings, "signin").loads(raw, max_age=SIGNIN_FORM_MAX_AGE_S)
    except BadSignature:
        return False
    return isinstance(token, str) and hmac.compare_digest(token.encode(), presented.encode())


def csrf_ok(session: Session, presented: Optional[str]) -> bool:
    return bool(presented) and bool(session.csrf) and hmac.compare_digest(session.csrf.encode(),
                                                                          presented.encode("utf-8", "replace"))
