"""Who may call, checked before a view does anything else (and before any query).

Every endpoint but /healthz: CRON_SECRET (`Authorization: Bearer` or `X-Cron-Secret`). The trigger endpoint
(`@require_secret(trigger=True)`: /process-pending) also admits a QStash signature, a Google OIDC token or a
timestamped HMAC (README, "Signed triggers"): a request is admitted when any configured method verifies it. The
methods are pure checks (jobprocessor/triggers/); a signed credential that verified is then written to the replay
record, the only database access here, so wrong credentials never reach PostgreSQL.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Iterator
from urllib.parse import quote

from flask import current_app, request

from ..config import MIN_SECRET_LENGTH
from ..extensions import db
from ..triggers import cron_secret, enabled_methods, google_oidc, jwks, qstash, replay_store, timestamped_hmac
from ..triggers.outcome import Rejected, Verified
from .errors import ApiError
from .params import raw_body

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="jobprocessor"'}
LABELS = {"cron_secret": "CRON_SECRET", "qstash": "QStash signature", "google_oidc": "Google OIDC token",
          "hmac": "HMAC signature"}
HOW_TO_SEND = {
    "cron_secret": "'Authorization: Bearer <CRON_SECRET>' or 'X-Cron-Secret'",
    "qstash": f"'{qstash.HEADER}' (QStash)",
    "google_oidc": "'Authorization: Bearer <Google ID token>'",
    "hmac": f"'{timestamped_hmac.TIMESTAMP_HEADER}' with '{timestamped_hmac.SIGNATURE_HEADER}'",
}
REPLAYED = {"qstash": "this message's token (jti) was already used", "hmac": "this signature was already used"}


def _settings():
    return current_app.extensions["jobprocessor"].settings


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, UNAUTHORIZED_HEADERS)


def check_secret() -> None:
    secret = _settings().CRON_SECRET
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        # fail closed: an unset or weak secret never opens the door
        raise ApiError(503, "secret_not_configured",
                       f"CRON_SECRET is not set or shorter than {MIN_SECRET_LENGTH} characters; "
                       "protected endpoints are disabled until it is set.")
    if not cron_secret.matches(cron_secret.presented_secret(request.headers), secret):
        raise _unauthorized("Missing or wrong secret: send 'Authorization: Bearer <CRON_SECRET>' or 'X-Cron-Secret'.")


def called_url() -> str:
    """The URL the caller called, as QStash signs it (`sub`): TRIGGER_PUBLIC_URL + path and query behind a proxy,
    else the URL this app sees."""
    public = _settings().TRIGGER_PUBLIC_URL
    if not public:
        return request.url
    query = request.query_string.decode("latin-1")
    return public.rstrip("/") + quote(request.path, safe="/:@!$&'()*+,;=-._~") + ("?" + query if query else "")


def _attempts(on: dict[str, bool]) -> Iterator[tuple[str, Callable[[], Verified]]]:
    """(method, check) for each method whose credentials the request presents; the cheapest first."""
    settings, headers = _settings(), request.headers
    secret, bearer = cron_secret.presented_secret(headers), cron_secret.bearer_token(headers)
    # a Bearer token is the secret or a Google ID token: not configured "CRON_SECRET" is only worth saying when
    # nothing else takes the token
    if secret is not None and (on["cron_secret"] or not (bearer and on["google_oidc"])):
        def check_cron() -> Verified:
            if not on["cron_secret"]:
                raise Rejected("CRON_SECRET is not set on this server")
            return cron_secret.verify(secret, settings.CRON_SECRET)
        yield "cron_secret", check_cron
    timestamp = headers.get(timestamped_hmac.TIMESTAMP_HEADER)
    signature = headers.get(timestamped_hmac.SIGNATURE_HEADER)
    if timestamp is not None or signature is not None:
        def check_hmac() -> Verified:
            if not on["hmac"]:
                raise Rejected("TRIGGER_HMAC_SECRET is not set on this server")
            return timestamped_hmac.verify(timestamp, signature, raw_body, settings.TRIGGER_HMAC_SECRET,
                                           time.time())
        yield "hmac", check_hmac
    upstash = headers.get(qstash.HEADER)
    if upstash is not None:
        def check_qstash() -> Verified:
            if not on["qstash"]:
                raise Rejected("QSTASH_CURRENT_SIGNING_KEY is not set on this server")
            keys = [k for k in (settings.QSTASH_CURRENT_SIGNING_KEY, settings.QSTASH_NEXT_SIGNING_KEY) if k]
            return qstash.verify(upstash, raw_body, called_url(), keys, settings.TRIGGER_JWT_LEEWAY_S)
        yield "qstash", check_qstash
    if bearer is not None and on["google_oidc"]:
        def check_oidc() -> Verified:
            return google_oidc.verify(bearer, jwks.cache_for(settings.GOOGLE_OIDC_JWKS_URL),
                                      settings.GOOGLE_OIDC_AUDIENCE, settings.GOOGLE_OIDC_ALLOWED_EMAILS,
                                      settings.TRIGGER_JWT_LEEWAY_S)
        yield "google_oidc", check_oidc


def check_trigger() -> None:
    on = enabled_methods(_settings())
    if not any(on.values()):
        raise ApiError(503, "secret_not_configured",
                       f"No trigger auth is configured: set CRON_SECRET (at least {MIN_SECRET_LENGTH} characters), "
                       "QSTASH_CURRENT_SIGNING_KEY, GOOGLE_OIDC_AUDIENCE or TRIGGER_HMAC_SECRET; the endpoint is "
                       "disabled until one is set.")
    failures = []
    for method, check in _attempts(on):
        try:
            verified = check()
        except Rejected as rejected:
            failures.append(f"{LABELS[method]}: {rejected.reason}")
            continue
        # the only query of the auth, and only for a credential whose signature verified
        if verified.replay_key is None or replay_store.remember(db.engine, verified.method, verified.replay_key,
                                                                verified.valid_until):
            return
        failures.append(f"{LABELS[method]}: {REPLAYED[method]} (replay refused)")
    if not failures:
        accepted = " or ".join(HOW_TO_SEND[method] for method, enabled in on.items() if enabled)
        raise _unauthorized(f"Missing credentials: send {accepted}.")
    raise _unauthorized("Not admitted: " + "; ".join(failures) + ".")


def require_secret(view=None, *, trigger: bool = False):
    """`@require_secret`: CRON_SECRET only. `@require_secret(trigger=True)`: also the signed trigger methods."""
    def decorate(view):
        check = check_trigger if trigger else check_secret

        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            check()
            return view(*args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate
