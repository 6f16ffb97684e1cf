"""Google's signing keys (a JWKS), cached per process.

Fetched from GOOGLE_OIDC_JWKS_URL when first needed, kept for as long as the response's Cache-Control max-age says
(bounded: MIN_LIFETIME_S..MAX_LIFETIME_S) and fetched again after that, or at once when a token names a key we do
not hold (Google started using a new key). Refetches caused by unknown keys, and attempts after a failure, are
rate-limited (one per MIN_REFETCH_S), so a flood of tokens with made-up `kid`s costs Google's URL one request a
minute. While the URL cannot be reached the keys held keep working; with none held, every token is refused.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from typing import Any, Callable

import jwt
from werkzeug.http import parse_cache_control_header

from .outcome import Rejected

log = logging.getLogger("jobprocessor.triggers")

FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1024 * 1024
MIN_REFETCH_S = 60.0
DEFAULT_LIFETIME_S = 300.0  # no max-age given
MIN_LIFETIME_S = 60.0  # max-age=0 or no-cache must not mean a fetch per request
MAX_LIFETIME_S = 86400.0

Keys = dict[str, Any]  # kid -> public key (a cryptography RSAPublicKey)
Fetch = Callable[[str], tuple[Keys, float | None]]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # a redirect could lead to a plain-http URL someone on the path controls: keys come from the URL configured
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def parse_jwks(document: Any) -> Keys:
    """The RS256 signing keys of a JWKS document, by kid (PyJWT parses each key; unusable keys are skipped)."""
    if not isinstance(document, dict):
        raise ValueError("the JWKS is not a JSON object")
    keys: Keys = {}
    for jwk in jwt.PyJWKSet.from_dict(document).keys:
        if jwk.key_id and jwk.key_type == "RSA" and jwk.algorithm_name == "RS256" and \
                jwk.public_key_use in (None, "sig"):
            key = jwk.key
            keys[jwk.key_id] = key.public_key() if hasattr(key, "private_numbers") else key
    if not keys:
        raise ValueError("the JWKS holds no RS256 signing key with a kid")
    return keys


def lifetime_from(headers: Any) -> float | None:
    """Seconds the response may be cached: Cache-Control max-age minus Age; None when it does not say."""
    control = parse_cache_control_header(headers.get("Cache-Control"))
    if control.no_store or control.no_cache:
        return 0.0
    if control.max_age is None:
        return None
    try:
        age = float(headers.get("Age") or 0)
    except ValueError:
        age = 0.0
    return max(0.0, control.max_age - age)


def fetch_jwks(url: str) -> tuple[Keys, float | None]:
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "jobprocessor"})
    with _opener.open(request, timeout=FETCH_TIMEOUT_S) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        raw = response.read(MAX_JWKS_BYTES + 1)
        if len(raw) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(json.loads(raw)), lifetime_from(response.headers)


class JwksCache:
    def __init__(self, url: str, fetch: Fetch = fetch_jwks, clock: Callable[[], float] = time.monotonic,
                 min_refetch_s: float = MIN_REFETCH_S):
        self.url, self._fetch, self._clock, self._min_refetch_s = url, fetch, clock, min_refetch_s
        self._keys: Keys = {}
        self._fresh_until = float("-inf")
        self._no_fetch_before = float("-inf")  # the rate limit
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> Any:
        keys, now = self._keys, self._clock()
        if now < self._fresh_until and kid in keys:
            return keys[kid]  # the common case: no lock
        with self._lock:  # one fetch at a time; the others wait for its result instead of fetching too
            now = self._clock()
            fetched = False
            if now >= self._fresh_until:
                fetched = self._refresh(now, unknown_kid=False)
            if kid not in self._keys and not fetched:
                self._refresh(now, unknown_kid=True)
            if kid in self._keys:
                return self._keys[kid]
            if not self._keys:
                raise Rejected("no Google signing keys are available (GOOGLE_OIDC_JWKS_URL could not be fetched)")
            raise Rejected("the token's key (kid) is not among Google's signing keys")

    def _refresh(self, now: float, unknown_kid: bool) -> bool:
        """One fetch attempt unless the rate limit forbids it; True when one was made."""
        if now < self._no_fetch_before:
            return False
        try:
            keys, lifetime = self._fetch(self.url)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the keys we hold
            self._no_fetch_before = now + self._min_refetch_s
            log.warning(json.dumps({"event": "jwks_fetch_failed", "url": self.url, "error": type(exc).__name__,
                                    "keys_kept": len(self._keys)}))
            return True
        lifetime = DEFAULT_LIFETIME_S if lifetime is None else lifetime
        self._keys = keys
        self._fresh_until = now + min(MAX_LIFETIME_S, max(MIN_LIFETIME_S, lifetime))
        if unknown_kid:
            self._no_fetch_before = now + self._min_refetch_s
        return True


_caches: dict[str, JwksCache] = {}
_caches_lock = threading.Lock()


def cache_for(url: str) -> JwksCache:
    """The process's cache for this URL (one per process: gunicorn workers each keep their own)."""
    with _caches_lock:
        cache = _caches.get(url)
        if cache is None:
            cache = _caches[url] = JwksCache(url)
        return cache
