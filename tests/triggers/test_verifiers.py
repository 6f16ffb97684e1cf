"""The trigger methods as pure checks (no database, no Flask): QStash tokens made as Upstash makes them, Google ID
tokens signed by our own RSA keys and served as a JWKS over real HTTP, the timestamped HMAC at its window's edges,
and the JWKS cache's refetch and outage rules under a controlled clock."""
from __future__ import annotations

import time

import jwt
import pytest

from jobprocessor.config import ConfigError, Settings
from jobprocessor.triggers import google_oidc, qstash, timestamped_hmac
from jobprocessor.triggers.jwks import JwksCache, lifetime_from
from jobprocessor.triggers.outcome import Rejected
from tests.support.trigger_fixtures import (AUDIENCE, EMAIL, HMAC_SECRET, QSTASH_CURRENT, QSTASH_NEXT, QSTASH_WRONG,
                                    JwksServer, RsaKey, google_claims, google_token, hs256_with_public_key,
                                    qstash_token, unsigned_token)

URL = "https://jobs.example.test/process-pending"
BODY = b'{"limit": 5}'
KEYS = [QSTASH_CURRENT, QSTASH_NEXT]
LEEWAY = 30.0


def rejected(call) -> str:
    with pytest.raises(Rejected) as info:
        call()
    return info.value.reason


# --- QStash -----------------------------------------------------------------------------------------------------------

def check_qstash(token, body=BODY, url=URL, keys=KEYS):
    return qstash.verify(token, body, url, keys, LEEWAY)


def test_qstash_valid_token_is_verified_with_its_jti_and_lifetime():
    now = int(time.time())
    token = qstash_token(URL, BODY, now=now, jti="jwt_abc")
    verified = check_qstash(token)
    assert (verified.method, verified.replay_key, verified.valid_until) == ("qstash", "jwt_abc", now + 300 + LEEWAY)


def test_qstash_body_hash_is_upstashs_documented_encoding():
    # the example of https://upstash.com/docs/qstash/features/security is base64url with its padding
    assert qstash.body_hash(b"").endswith("=") and "+" not in qstash.body_hash(b"\xff" * 100)
    assert check_qstash(qstash_token(URL, b"", body=qstash.body_hash(b"").rstrip("=")), body=b"")  # unpadded too


def test_qstash_next_key_during_rotation_is_accepted():
    assert check_qstash(qstash_token(URL, BODY, key=QSTASH_NEXT)).method == "qstash"
    # and the current key alone refuses it
    assert "neither" in rejected(lambda: check_qstash(qstash_token(URL, BODY, key=QSTASH_NEXT), keys=[QSTASH_CURRENT]))


def test_qstash_wrong_key_is_refused():
    assert rejected(lambda: check_qstash(qstash_token(URL, BODY, key=QSTASH_WRONG))) == \
        "the signature verifies with neither QSTASH_CURRENT_SIGNING_KEY nor QSTASH_NEXT_SIGNING_KEY"


@pytest.mark.parametrize("offset,ok", [(-LEEWAY + 5, True), (-LEEWAY - 5, False)])
def test_qstash_expiry_with_clock_skew(offset, ok):
    now = int(time.time())
    token = qstash_token(URL, BODY, now=now - 600, exp=int(now + offset))
    if ok:
        assert check_qstash(token)
    else:
        assert "expired" in rejected(lambda: check_qstash(token))


@pytest.mark.parametrize("offset,ok", [(LEEWAY - 5, True), (LEEWAY + 5, False)])
def test_qstash_not_yet_valid_with_clock_skew(offset, ok):
    now = int(time.time())
    token = qstash_token(URL, BODY, now=now, nbf=int(now + offset), iat=int(now + offset))
    if ok:
        assert check_qstash(token)
    else:
        assert "not valid yet" in rejected(lambda: check_qstash(token))


def test_qstash_tampered_body_is_refused():
    token = qstash_token(URL, BODY)
    assert rejected(lambda: check_qstash(token, body=b'{"limit": 1000}')) == \
        "the body does not match the token's body hash"
    assert "body" in rejected(lambda: check_qstash(token, body=BODY + b" "))


@pytest.mark.parametrize("url", ["https://jobs.example.test/process-pending?limit=1000",
                                 "https://other.example.test/process-pending",
                                 "http://jobs.example.test/process-pending", "https://jobs.example.test/jobs"])
def test_qstash_token_for_another_url_is_refused(url):
    assert "another URL" in rejected(lambda: check_qstash(qstash_token(url, BODY)))


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "nbf", "jti", "body"])
def test_qstash_token_missing_a_claim_is_refused(claim):
    assert rejected(lambda: check_qstash(qstash_token(URL, BODY, **{claim: None}))) == \
        f"the token lacks the {claim!r} claim"


def test_qstash_wrong_issuer_and_odd_claims_are_refused():
    assert rejected(lambda: check_qstash(qstash_token(URL, BODY, iss="Upstash2"))) == \
        "the token's issuer is not Upstash"
    assert "jti" in rejected(lambda: check_qstash(qstash_token(URL, BODY, jti="x" * 300)))
    assert "body" in rejected(lambda: check_qstash(qstash_token(URL, BODY, body=12)))


def test_qstash_alg_none_is_refused():
    now = int(time.time())
    claims = {"iss": "Upstash", "sub": URL, "exp": now + 300, "nbf": now, "jti": "jwt_x",
              "body": qstash.body_hash(BODY)}
    token = unsigned_token({"alg": "none", "typ": "JWT"}, claims)
    assert rejected(lambda: check_qstash(token)) == "the token's algorithm is not accepted"


@pytest.mark.parametrize("token", ["x" * 100_000, "a.b.c", "not a jwt", "..", "e30.e30.", "\u00ff\u00fe.x.y"])
def test_qstash_garbage_and_a_100_kb_token_are_refused_without_echo(token):
    reason = rejected(lambda: check_qstash(token))
    assert token not in reason and len(reason) < 200
    if len(token) == 100_000:
        assert reason == "the token is longer than 8192 characters"


def test_qstash_reads_the_body_only_after_the_signature_verified():
    reads = []

    def body():
        reads.append(1)
        return BODY

    assert "neither" in rejected(lambda: check_qstash(qstash_token(URL, BODY, key=QSTASH_WRONG), body=body))
    assert "expired" in rejected(lambda: check_qstash(qstash_token(URL, BODY, now=time.time() - 900), body=body))
    assert reads == []
    assert check_qstash(qstash_token(URL, BODY), body=body) and reads == [1]


# --- Google OIDC ------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def rsa_keys():
    return {name: RsaKey(name) for name in ("google-1", "google-2", "attacker")}


@pytest.fixture
def jwks_server(rsa_keys):
    server = JwksServer([rsa_keys["google-1"]], max_age=3600)
    yield server
    server.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cache(jwks_server, clock):
    return JwksCache(jwks_server.url, clock=clock, min_refetch_s=60)


def check_google(token, cache, emails=(EMAIL,)):
    return google_oidc.verify(token, cache, AUDIENCE, emails, LEEWAY)


def test_google_valid_token_is_verified_and_keys_are_fetched_once(rsa_keys, cache, jwks_server):
    for _ in range(5):
        assert check_google(google_token(rsa_keys["google-1"]), cache).method == "google_oidc"
    assert jwks_server.count() == 1  # cached: max-age 3600


def test_google_email_is_compared_case_insensitively(rsa_keys, cache):
    assert check_google(google_token(rsa_keys["google-1"], email=EMAIL.upper()), cache)


@pytest.mark.parametrize("overrides,reason", [
    ({"aud": "https://other.example.test/"}, "the token's audience is not GOOGLE_OIDC_AUDIENCE"),
    ({"iss": "https://evil.example.test"}, "the token's issuer is not accounts.google.com"),
    ({"email": "someone@gmail.com"}, "the token's e-mail is not in GOOGLE_OIDC_ALLOWED_EMAILS"),
    ({"email_verified": False}, "the token's e-mail is not verified (email_verified)"),
    ({"email_verified": "true"}, "the token's e-mail is not verified (email_verified)"),
    ({"email_verified": None}, "the token's e-mail is not verified (email_verified)"),
    ({"email": None}, "the token lacks the 'email' claim"),
    ({"aud": None}, "the token lacks the 'aud' claim"),
])
def test_google_claims_are_checked(rsa_keys, cache, overrides, reason):
    assert rejected(lambda: check_google(google_token(rsa_keys["google-1"], **overrides), cache)) == reason


def test_google_accounts_issuer_without_scheme_is_accepted(rsa_keys, cache):
    assert check_google(google_token(rsa_keys["google-1"], iss="accounts.google.com"), cache)


@pytest.mark.parametrize("field,offset,ok", [
    ("exp", -LEEWAY + 5, True), ("exp", -LEEWAY - 5, False),
    ("iat", LEEWAY - 5, True), ("iat", LEEWAY + 5, False),
])
def test_google_clock_skew_inside_and_outside_the_leeway(rsa_keys, cache, field, offset, ok):
    now = int(time.time())
    token = google_token(rsa_keys["google-1"], now=now - 1800 if field == "exp" else now, **{field: int(now + offset)})
    if ok:
        assert check_google(token, cache)
    else:
        assert ("expired" if field == "exp" else "not valid yet") in rejected(lambda: check_google(token, cache))


def test_google_token_signed_with_a_wrong_key_is_refused(rsa_keys, cache):
    forged = google_token(rsa_keys["attacker"], kid="google-1")  # a real kid, someone else's key
    assert rejected(lambda: check_google(forged, cache)) == "the signature does not verify"


def test_google_alg_none_is_refused_without_fetching_keys(rsa_keys, cache, jwks_server):
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": "google-1"}, google_claims())
    assert rejected(lambda: check_google(token, cache)) == \
        "only RS256 tokens are accepted (Google signs ID tokens with RS256)"
    assert jwks_server.count() == 0


def test_google_algorithm_confusion_is_refused(rsa_keys, cache, jwks_server):
    """HS256 with the RSA public key as the HMAC secret: refused by the header check, and by PyJWT's allow-list
    and key typing behind it (checked directly: the second line of defence holds alone)."""
    forged = hs256_with_public_key(rsa_keys["google-1"], google_claims())
    assert "only RS256" in rejected(lambda: check_google(forged, cache))
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(forged, rsa_keys["google-1"].public, algorithms=["RS256"], audience=AUDIENCE)
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, rsa_keys["google-1"].public_pem(), algorithms=["HS256", "RS256"], audience=AUDIENCE)


def test_google_unknown_kid_triggers_exactly_one_refetch(rsa_keys, cache, jwks_server, clock):
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    assert jwks_server.count() == 1
    for i in range(50):  # a flood of made-up kids: one refetch, then the rate limit
        token = google_token(rsa_keys["attacker"], kid=f"made-up-{i}")
        assert "not among Google's signing keys" in rejected(lambda: check_google(token, cache))
    assert jwks_server.count() == 2
    clock.now += 61  # a minute later, one more is allowed
    assert "not among" in rejected(lambda: check_google(google_token(rsa_keys["attacker"], kid="again"), cache))
    assert jwks_server.count() == 3


def test_google_key_rotation_new_kid_is_fetched_and_accepted(rsa_keys, cache, jwks_server):
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    jwks_server.keys.append(rsa_keys["google-2"])  # Google publishes its next key
    assert check_google(google_token(rsa_keys["google-2"]), cache)
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    assert jwks_server.count() == 2


def test_jwks_is_refetched_when_its_max_age_ends(rsa_keys, jwks_server, clock):
    jwks_server.max_age = 600
    cache = JwksCache(jwks_server.url, clock=clock)
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    clock.now += 599
    assert check_google(google_token(rsa_keys["google-1"]), cache) and jwks_server.count() == 1
    clock.now += 2
    assert check_google(google_token(rsa_keys["google-1"]), cache) and jwks_server.count() == 2


def test_jwks_server_down_cached_keys_still_work(rsa_keys, jwks_server, clock):
    jwks_server.max_age = 600
    cache = JwksCache(jwks_server.url, clock=clock, min_refetch_s=60)
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    jwks_server.down = True
    clock.now += 700  # the cache is stale, the server answers 503
    assert check_google(google_token(rsa_keys["google-1"]), cache)
    assert jwks_server.count() == 2  # it tried once ...
    for _ in range(10):
        assert check_google(google_token(rsa_keys["google-1"]), cache)
    assert jwks_server.count() == 2  # ... and then not again within the rate limit
    jwks_server.close()  # connection refused now
    clock.now += 61
    assert check_google(google_token(rsa_keys["google-1"]), cache)


def test_jwks_server_down_with_no_keys_refuses_every_token(rsa_keys, jwks_server, clock):
    jwks_server.down = True
    cache = JwksCache(jwks_server.url, clock=clock)
    for _ in range(3):
        assert rejected(lambda: check_google(google_token(rsa_keys["google-1"]), cache)) == \
            "no Google signing keys are available (GOOGLE_OIDC_JWKS_URL could not be fetched)"
    assert jwks_server.count() == 1  # and a down server is not hammered
    jwks_server.close()
    clock.now += 61
    assert "no Google signing keys" in rejected(lambda: check_google(google_token(rsa_keys["google-1"]), cache))


@pytest.mark.parametrize("document", [
    {"keys": []},
    {"keys": [{"kty": "oct", "kid": "google-1", "k": "c2VjcmV0", "alg": "HS256"}]},  # a symmetric key: never
    {"keys": [{"kty": "RSA", "kid": "google-1", "n": "AQAB", "e": "AQAB", "use": "enc"}]},
    {"nothing": 1},
    [1, 2],
])
def test_jwks_without_an_rs256_signing_key_is_a_failed_fetch(rsa_keys, clock, document):
    from jobprocessor.triggers.jwks import parse_jwks

    with pytest.raises(Exception):
        parse_jwks(document)
    cache = JwksCache("http://127.0.0.1:9/unused", fetch=lambda url: (parse_jwks(document), None), clock=clock)
    assert "no Google signing keys" in rejected(lambda: check_google(google_token(rsa_keys["google-1"]), cache))


@pytest.mark.parametrize("headers,lifetime", [
    ({"Cache-Control": "public, max-age=19591, must-revalidate, no-transform"}, 19591),
    ({"Cache-Control": "public, max-age=600", "Age": "100"}, 500),
    ({"Cache-Control": "no-cache"}, 0), ({"Cache-Control": "no-store"}, 0), ({}, None),
    ({"Cache-Control": "max-age=abc"}, None),
])
def test_jwks_lifetime_comes_from_cache_control(headers, lifetime):
    assert lifetime_from(headers) == lifetime


def test_google_100_kb_token_is_refused_before_parsing(cache, jwks_server):
    assert rejected(lambda: check_google("e" * 100_000, cache)) == "the token is longer than 8192 characters"
    assert jwks_server.count() == 0


# --- timestamped HMAC -------------------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def check_hmac(timestamp, signature=None, body=BODY, secret=HMAC_SECRET, now=NOW):
    if signature is None:
        signature = timestamped_hmac.sign(HMAC_SECRET, timestamp, body)
    return timestamped_hmac.verify(str(timestamp), signature, body, secret, now)


@pytest.mark.parametrize("offset,ok", [(-300, True), (-301, False), (300, True), (301, False), (0, True)])
def test_hmac_window_edges(offset, ok):
    ts = int(NOW) + offset
    if ok:
        verified = check_hmac(ts)
        assert verified.valid_until == ts + 300 and len(verified.replay_key) == 64
    else:
        assert rejected(lambda: check_hmac(ts)) == "the timestamp is more than 300 s away from the server's clock"


def test_hmac_signature_is_the_documented_construction():
    import hashlib
    import hmac

    expected = hmac.new(HMAC_SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert timestamped_hmac.sign(HMAC_SECRET, 1700000000, BODY) == "sha256=" + expected
    assert check_hmac(1700000000, "sha256=" + expected.upper())  # hex in either case


@pytest.mark.parametrize("timestamp,signature,reason", [
    ("1700000000", "sha256=" + "0" * 64, "the signature is not HMAC-SHA256"),
    ("1700000000", "sha1=" + "0" * 40, "must be sha256=<64 hex digits>"),
    ("1700000000", "0" * 64, "must be sha256=<64 hex digits>"),
    ("1700000000.5", None, "must be unix seconds"),
    ("-1700000000", None, "must be unix seconds"),
    ("1e9", None, "must be unix seconds"),
    ("١٧٠٠٠٠٠٠٠٠", None, "must be unix seconds"),
])
def test_hmac_malformed_or_wrong_headers_are_refused(timestamp, signature, reason):
    signature = signature or timestamped_hmac.sign(HMAC_SECRET, "1700000000", BODY)
    assert reason in rejected(lambda: timestamped_hmac.verify(timestamp, signature, BODY, HMAC_SECRET, NOW))


def test_hmac_wrong_secret_and_tampered_body_are_refused():
    assert "not HMAC" in rejected(lambda: check_hmac(int(NOW), secret="another-secret-0123456789"))
    signature = timestamped_hmac.sign(HMAC_SECRET, int(NOW), BODY)
    assert "not HMAC" in rejected(lambda: check_hmac(int(NOW), signature, body=BODY + b"x"))
    assert "not HMAC" in rejected(lambda: check_hmac(int(NOW) + 1, signature))  # the timestamp is signed


def test_hmac_reads_the_body_only_for_well_formed_headers_inside_the_window():
    reads = []

    def body():
        reads.append(1)
        return BODY

    signature = timestamped_hmac.sign(HMAC_SECRET, int(NOW), BODY)
    for timestamp, presented in ((str(int(NOW) - 400), signature), ("soon", signature), (str(int(NOW)), "sha256=x")):
        rejected(lambda: timestamped_hmac.verify(timestamp, presented, body, HMAC_SECRET, NOW))
    assert reads == []
    assert timestamped_hmac.verify(str(int(NOW)), signature, body, HMAC_SECRET, NOW) and reads == [1]


def test_hmac_needs_both_headers():
    assert "send both" in rejected(lambda: timestamped_hmac.verify(None, "sha256=" + "0" * 64, b"", HMAC_SECRET, NOW))
    assert "send both" in rejected(lambda: timestamped_hmac.verify("1700000000", None, b"", HMAC_SECRET, NOW))


# --- configuration ----------------------------------------------------------------------------------------------------

DB = "postgresql://u@127.0.0.1:5432/db"


@pytest.mark.parametrize("env,line", [
    ({"QSTASH_CURRENT_SIGNING_KEY": "sig_short"}, "QSTASH_CURRENT_SIGNING_KEY must be at least 32 characters long"),
    ({"QSTASH_CURRENT_SIGNING_KEY": QSTASH_CURRENT, "QSTASH_NEXT_SIGNING_KEY": "sig_short"},
     "QSTASH_NEXT_SIGNING_KEY must be at least 32 characters long"),
    ({"QSTASH_NEXT_SIGNING_KEY": QSTASH_NEXT}, "QSTASH_NEXT_SIGNING_KEY is set but QSTASH_CURRENT_SIGNING_KEY is not"),
    ({"TRIGGER_PUBLIC_URL": "jobs.example.com"}, "TRIGGER_PUBLIC_URL must be an absolute https:// URL"),
    ({"TRIGGER_PUBLIC_URL": "http://jobs.example.com"}, "TRIGGER_PUBLIC_URL must use https://"),
    ({"TRIGGER_PUBLIC_URL": "https://jobs.example.com/?a=1"}, "TRIGGER_PUBLIC_URL must not have a query string"),
    ({"GOOGLE_OIDC_AUDIENCE": AUDIENCE}, "GOOGLE_OIDC_ALLOWED_EMAILS must list the service accounts"),
    ({"GOOGLE_OIDC_ALLOWED_EMAILS": EMAIL}, "GOOGLE_OIDC_AUDIENCE must be set when GOOGLE_OIDC_ALLOWED_EMAILS is"),
    ({"GOOGLE_OIDC_AUDIENCE": AUDIENCE, "GOOGLE_OIDC_ALLOWED_EMAILS": "nobody"},
     "GOOGLE_OIDC_ALLOWED_EMAILS must be e-mail addresses"),
    ({"GOOGLE_OIDC_JWKS_URL": "http://keys.example.com/certs"}, "GOOGLE_OIDC_JWKS_URL must use https://"),
    ({"GOOGLE_OIDC_JWKS_URL": "file:///etc/passwd"}, "GOOGLE_OIDC_JWKS_URL must be an absolute https:// URL"),
    ({"TRIGGER_HMAC_SECRET": "short"}, "TRIGGER_HMAC_SECRET must be at least 16 characters long"),
    ({"TRIGGER_JWT_LEEWAY_S": "301"}, "TRIGGER_JWT_LEEWAY_S must be between 0 and 300"),
    ({"TRIGGER_JWT_LEEWAY_S": "soon"}, "TRIGGER_JWT_LEEWAY_S must be a number"),
])
def test_bad_trigger_configuration_is_one_line_naming_the_variable(env, line):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DATABASE_URL": DB, **env})
    message = str(info.value)
    assert message.startswith(line) and "\n" not in message
    for name, value in env.items():
        if "KEY" in name or "SECRET" in name:
            assert value not in message


def test_trigger_settings_parse_and_default():
    s = Settings.from_env({"DATABASE_URL": DB, "GOOGLE_OIDC_AUDIENCE": AUDIENCE,
                           "GOOGLE_OIDC_ALLOWED_EMAILS": f" {EMAIL.upper()} , b@x.iam.gserviceaccount.com,",
                           "GOOGLE_OIDC_JWKS_URL": "http://127.0.0.1:9/certs",
                           "TRIGGER_PUBLIC_URL": "https://jobs.example.com/prefix"})
    assert s.GOOGLE_OIDC_ALLOWED_EMAILS == (EMAIL, "b@x.iam.gserviceaccount.com")
    default = Settings.from_env({"DATABASE_URL": DB})
    assert default.GOOGLE_OIDC_JWKS_URL == "https://www.googleapis.com/oauth2/v3/certs"
    assert (default.TRIGGER_JWT_LEEWAY_S, default.QSTASH_CURRENT_SIGNING_KEY, default.TRIGGER_HMAC_SECRET) == \
        (30.0, "", "")
    secret = Settings.from_env({"DATABASE_URL": DB, "QSTASH_CURRENT_SIGNING_KEY": QSTASH_CURRENT,
                                "TRIGGER_HMAC_SECRET": HMAC_SECRET})
    assert QSTASH_CURRENT not in repr(secret) and HMAC_SECRET not in repr(secret)
