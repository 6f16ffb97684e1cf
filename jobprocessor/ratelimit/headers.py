"""Reading what OpenAI says about its rate limits, from response headers. Pure.

OpenAI sends, on every response (platform.openai.com/docs/guides/rate-limits, "Rate limits in headers"):
    x-ratelimit-limit-requests: 60          x-ratelimit-limit-tokens: 150000
    x-ratelimit-remaining-requests: 59      x-ratelimit-remaining-tokens: 149984
    x-ratelimit-reset-requests: 1s          x-ratelimit-reset-tokens: 6m0s
where reset is "the time until the rate limit resets to its initial state", written as a Go duration ("12ms",
"1s", "6m0s", "23h18m29.144s"). A 429 also carries Retry-After (seconds or an HTTP date; the SDK also honours a
non-standard retry-after-ms). Headers may be missing (proxies, other providers) or negative (Azure sends -1 for
"unknown"): each is then None, never a guess.
"""
from __future__ import annotations

import email.utils
import math
import re
from typing import Mapping, Optional

from .core import ServerView

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
MAX_SECONDS = 86400.0 * 7  # anything longer is treated as a garbled header, not a week-long wait


def parse_duration(text: Optional[str]) -> Optional[float]:
    """'6m0s' -> 360.0, '12ms' -> 0.012, '1.5' (bare seconds) -> 1.5; anything else -> None."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                return None
            value += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if pos != len(text):
            return None
    if not math.isfinite(value) or value < 0 or value > MAX_SECONDS:
        return None
    return value


def _non_negative(text: Optional[str]) -> Optional[float]:
    """A header's plain number, if it is one that is finite and not negative."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _count(text: Optional[str]) -> Optional[int]:
    value = _non_negative(text)
    return None if value is None else int(value)


def parse_retry_after(headers: Mapping[str, str], now_epoch: float) -> Optional[float]:
    """Seconds to wait from retry-after-ms, else Retry-After as seconds, else Retry-After as an HTTP date."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = headers.get("retry-after")
    seconds = _seconds(raw)
    if seconds is not None:
        return seconds
    if raw:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if parsed is None or parsed.tzinfo is None:
            return None
        return min(MAX_SECONDS, max(0.0, parsed.timestamp() - now_epoch))
    return None


def _seconds(text: Optional[str]) -> Optional[float]:
    value = _non_negative(text)
    return None if value is None else min(value, MAX_SECONDS)


def server_view(headers: Mapping[str, str], now_epoch: float) -> Optional[ServerView]:
    """The server's rate-limit figures from response headers (any mapping; names compared case-insensitively).
    None when the response carries none of them."""
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    view = ServerView(
        limit_requests=_count(lower.get("x-ratelimit-limit-requests")),
        limit_tokens=_count(lower.get("x-ratelimit-limit-tokens")),
        remaining_requests=_count(lower.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_count(lower.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=parse_duration(lower.get("x-ratelimit-reset-requests")),
        reset_tokens_s=parse_duration(lower.get("x-ratelimit-reset-tokens")),
        retry_after_s=parse_retry_after(lower, now_epoch),
    )
    return None if view == ServerView() else view


def format_duration(seconds: float) -> str:
    """The inverse, as OpenAI writes it ('1s', '6m0s', '120ms'); the tests' fake server uses it."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{int(round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
