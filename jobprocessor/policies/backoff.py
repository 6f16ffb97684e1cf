"""Retry delay after a failed attempt.

    delay(attempts) = min(cap, base * 2 ** (attempts - 1)) * (1 - jitter * u),   u uniform in [0, 1)

With the defaults (base 10 s, cap 1 h, jitter 0.5) the n-th failure waits 5-10 s, 10-20 s, 20-40 s, ... up to
30-60 min. Jitter spreads jobs that failed together (an upstream outage) so they do not retry in one wave;
keeping at least half of the exponential delay keeps the backoff meaningful.
"""
from __future__ import annotations

import random

BASE_S = 10.0
CAP_S = 3600.0
JITTER = 0.5


def retry_delay(attempts: int, u: float | None = None, *, base_s: float = BASE_S, cap_s: float = CAP_S,
                jitter: float = JITTER) -> float:
    """Seconds to wait before the next attempt, after `attempts` attempts have run (attempts >= 1)."""
    if u is None:
        u = random.random()
    exponent = min(max(attempts, 1) - 1, 62)  # 2**62 * base is far past any cap; avoids float overflow
    ceiling = min(cap_s, base_s * (2.0 ** exponent))
    return ceiling * (1.0 - jitter * u)
