"""CRON_SECRET: `Authorization: Bearer <secret>` (what Vercel Cron sends) or `X-Cron-Secret: <secret>`."""
from __future__ import annotations

import hmac
from typing import Mapping

from .outcome import Rejected, Verified


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def presented_secret(headers: Mapping[str, str]) -> str | None:
    bearer = bearer_token(headers)
    return bearer if bearer is not None else headers.get("X-Cron-Secret")


def matches(presented: str | None, secret: str) -> bool:
    # compare_digest takes the same time wherever the strings differ; bytes so any character set is comparable
    return presented is not None and hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                                         secret.encode("utf-8"))


def verify(presented: str | None, secret: str) -> Verified:
    if not matches(presented, secret):
        raise Rejected("wrong secret")
    return Verified("cron_secret")
