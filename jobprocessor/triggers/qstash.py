"""Upstash QStash: the `Upstash-Signature` header is a JWT signed HS256 with the current signing key or, during a
rotation, the next one (https://upstash.com/docs/qstash/features/security). Claims: `iss` "Upstash", `sub` the URL
that was called, `exp`/`nbf` (a 5-minute life by default), `jti` (unique per token, remembered by the replay
record while the token could still be valid) and `body`, the base64url SHA-256 of the raw body."""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Callable, Sequence

import jwt

from .jwt_errors import describe
from .outcome import Rejected, Verified, check_token_size

HEADER = "Upstash-Signature"
ISSUER = "Upstash"
MAX_JTI_CHARS = 256
_REQUIRED = ["iss", "sub", "exp", "nbf", "jti", "body"]


def body_hash(body: bytes) -> str:
    """The `body` claim as Upstash writes it: base64url of SHA-256, with padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")


def verify(token: str, body: bytes | Callable[[], bytes], url: str, keys: Sequence[str],
           leeway_s: float) -> Verified:
    """`body` may be a function that reads it: the body is read only once the token's signature verified."""
    check_token_size(token)
    claims = None
    for key in keys:  # current first, then next: a rotation needs no downtime
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], issuer=ISSUER, leeway=leeway_s,
                                options={"require": _REQUIRED, "enforce_minimum_key_length": True})
            break
        except jwt.InvalidSignatureError:
            continue  # maybe the other key; any other refusal came after the signature verified
        except jwt.PyJWTError as exc:
            raise Rejected(describe(exc, ISSUER)) from None
    if claims is None:
        raise Rejected("the signature verifies with neither QSTASH_CURRENT_SIGNING_KEY nor QSTASH_NEXT_SIGNING_KEY")
    if claims["sub"] != url:
        raise Rejected("the token was issued for another URL (its sub is not this endpoint's public URL; behind "
                       "a proxy set TRIGGER_PUBLIC_URL)")
    claimed_body, body = claims["body"], body() if callable(body) else body
    if not isinstance(claimed_body, str) or not hmac.compare_digest(claimed_body.rstrip("="),
                                                                    body_hash(body).rstrip("=")):
        raise Rejected("the body does not match the token's body hash")
    jti, exp = claims["jti"], claims["exp"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise Rejected("the token's jti is not a short string")
    return Verified("qstash", replay_key=jti, valid_until=float(exp) + leeway_s)
