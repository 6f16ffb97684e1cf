"""Google OIDC: Cloud Scheduler and Cloud Tasks HTTP targets with an OIDC token send `Authorization: Bearer <ID
token>`, a JWT Google signs RS256 with one of the keys it publishes (jwks.py). Checked: the signature (RS256
only, whatever the token's header asks for), `iss` accounts.google.com, `aud` = GOOGLE_OIDC_AUDIENCE, exp/iat
with the leeway, `email` in GOOGLE_OIDC_ALLOWED_EMAILS and `email_verified`.

Google ID tokens carry no `jti`, and Google's clients may reuse a token for its hour of life, so they are not
put in the replay record: a token is bound to our audience and to the allowed service accounts, and expires."""
from __future__ import annotations

from typing import Sequence

import jwt

from .jwks import JwksCache
from .jwt_errors import describe
from .outcome import Rejected, Verified, check_token_size

ISSUERS = ("https://accounts.google.com", "accounts.google.com")  # Google writes either
MAX_KID_CHARS = 256
_REQUIRED = ["iss", "aud", "exp", "iat", "email"]


def verify(token: str, keys: JwksCache, audience: str, allowed_emails: Sequence[str],
           leeway_s: float) -> Verified:
    check_token_size(token)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Rejected("the Bearer token is not a well-formed JWT") from None
    # before any key is looked up: `alg: none`, or HS256 "signed" with Google's public key (algorithm
    # confusion), must not even cost a JWKS refetch
    if header.get("alg") != "RS256":
        raise Rejected("only RS256 tokens are accepted (Google signs ID tokens with RS256)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise Rejected("the token names no signing key (kid)")
    key = keys.key_for(kid)
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=ISSUERS, leeway=leeway_s,
                            options={"require": _REQUIRED, "enforce_minimum_key_length": True})
    except jwt.PyJWTError as exc:
        raise Rejected(describe(exc, "accounts.google.com", "GOOGLE_OIDC_AUDIENCE")) from None
    email = claims["email"]
    if not isinstance(email, str) or email.lower() not in allowed_emails:
        raise Rejected("the token's e-mail is not in GOOGLE_OIDC_ALLOWED_EMAILS")
    if claims.get("email_verified") is not True:
        raise Rejected("the token's e-mail is not verified (email_verified)")
    return Verified("google_oidc")
