"""Timestamped HMAC, for any scheduler or a plain curl: `X-Jobprocessor-Timestamp: <unix seconds>` and
`X-Jobprocessor-Signature: sha256=<hex HMAC-SHA256(TRIGGER_HMAC_SECRET, timestamp + "." + raw body)>`. A timestamp
more than WINDOW_S from the server's clock is refused, and so is a signature seen before (the replay record keeps
it while its timestamp is inside the window)."""
from __future__ import annotations

import hashlib
import hmac
import re
from typing import Callable

from .outcome import Rejected, Verified

TIMESTAMP_HEADER = "X-Jobprocessor-Timestamp"
SIGNATURE_HEADER = "X-Jobprocessor-Signature"
WINDOW_S = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The header value a caller sends (the README's openssl one-liner computes the same)."""
    message = f"{timestamp}.".encode("ascii") + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(timestamp: str | None, signature: str | None, body: bytes | Callable[[], bytes], secret: str,
           now: float) -> Verified:
    """`body` may be a function that reads it: headers and window are checked before the body is read."""
    if timestamp is None or signature is None:
        raise Rejected(f"send both {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Rejected(f"{TIMESTAMP_HEADER} must be unix seconds")
    presented = _SIGNATURE.fullmatch(signature)
    if presented is None:
        raise Rejected(f"{SIGNATURE_HEADER} must be sha256=<64 hex digits>")
    if abs(now - int(timestamp)) > WINDOW_S:
        raise Rejected(f"the timestamp is more than {WINDOW_S} s away from the server's clock")
    expected = sign(secret, timestamp, body() if callable(body) else body)[len("sha256="):]
    if not hmac.compare_digest(expected, presented.group(1).lower()):
        raise Rejected('the signature is not HMAC-SHA256(TRIGGER_HMAC_SECRET, timestamp + "." + body)')
    return Verified("hmac", replay_key=expected, valid_until=float(int(timestamp) + WINDOW_S))
