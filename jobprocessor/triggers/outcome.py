"""What a method says of a request: Verified (with what the replay record must remember) or Rejected (why)."""
from __future__ import annotations

from dataclasses import dataclass

# Far above any real token (QStash ~500 bytes, Google ID tokens ~1.3 KB); refused before any parsing
MAX_TOKEN_CHARS = 8192


class Rejected(Exception):
    """The method looked at the credentials and refused them. `reason` is one clause that is safe to send back:
    it never quotes the token, the signature or a secret."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    method: str
    # what must not be accepted twice (a QStash jti, an HMAC signature), and until when (unix seconds) the same
    # credential could still verify; None: nothing to remember
    replay_key: str | None = None
    valid_until: float | None = None


def check_token_size(token: str) -> None:
    if len(token) > MAX_TOKEN_CHARS:
        raise Rejected(f"the token is longer than {MAX_TOKEN_CHARS} characters")
