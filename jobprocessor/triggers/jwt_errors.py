"""PyJWT's refusals as fixed sentences (the library's own messages are not sent back: they are not ours to
keep free of token contents)."""
from __future__ import annotations

import jwt


def describe(exc: jwt.PyJWTError, issuer: str, audience_setting: str | None = None) -> str:
    # subclasses before their bases: InvalidSignatureError is a DecodeError, the claim errors InvalidTokenErrors
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired (exp is past, beyond the allowed clock skew)"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat is in the future, beyond the allowed clock skew)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"the token's issuer is not {issuer}"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the token's audience is not {audience_setting}" if audience_setting else \
            "the token carries an audience this method does not expect"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token's algorithm is not accepted"
    if isinstance(exc, jwt.InvalidKeyError):
        return "the signing key is too weak"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the signature does not verify"
    if isinstance(exc, jwt.DecodeError):
        return "the token is not a well-formed JWT"
    return "the token is invalid"
