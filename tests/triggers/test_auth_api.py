"""Signed triggers through the app (Flask test client, real PostgreSQL, a real JWKS server on loopback): each method
admits /process-pending and nothing else, refusals are 401 JSON naming the method and the reason without echoing a
credential, replays are refused through the shared table, and nothing but a verified signature reaches the database."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from sqlalchemy import event, text

from jobprocessor import create_app
from jobprocessor.triggers import replay_store
from tests.support.db import insert_jobs
from tests.support.gunicorn import free_port
from tests.support.settings import AUTH, SECRET, make_settings
from tests.support.trigger_fixtures import (AUDIENCE, EMAIL, HMAC_SECRET, QSTASH_CURRENT, QSTASH_NEXT, QSTASH_WRONG,
                                    JwksServer, RsaKey, google_claims, google_token, hmac_headers,
                                    hs256_with_public_key, qstash_token, unsigned_token)

LOCAL_URL = "http://localhost/process-pending"  # what the test client's requests look like to the app


@pytest.fixture(scope="module")
def google_key():
    return RsaKey("google-1")


@pytest.fixture
def jwks_server(google_key):
    server = JwksServer([google_key])
    yield server
    server.close()


def signed_settings(database_url, jwks_url, **overrides):
    values = dict(QSTASH_CURRENT_SIGNING_KEY=QSTASH_CURRENT, QSTASH_NEXT_SIGNING_KEY=QSTASH_NEXT,
                  GOOGLE_OIDC_AUDIENCE=AUDIENCE, GOOGLE_OIDC_ALLOWED_EMAILS=(EMAIL,), GOOGLE_OIDC_JWKS_URL=jwks_url,
                  TRIGGER_HMAC_SECRET=HMAC_SECRET)
    values.update(overrides)
    return make_settings(database_url, **values)


@pytest.fixture
def replays(raw_engine):
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE trigger_replays"))
    return raw_engine


def build(database_url, jwks_url, **overrides):
    app = create_app(signed_settings(database_url, jwks_url, **overrides))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def signed_app(database_url, clean_db, replays, jwks_server):
    app = build(database_url, jwks_server.url)
    with app.app_context():
        yield app
        from jobprocessor.extensions import db

        db.engine.dispose()


@pytest.fixture
def client(signed_app):
    return signed_app.test_client()


@pytest.fixture
def signed_engine(signed_app):
    from jobprocessor.extensions import db

    return db.engine


def credentials(method: str, google_key: RsaKey, body: bytes = b"", url: str = LOCAL_URL) -> dict:
    if method == "qstash":
        return {"Upstash-Signature": qstash_token(url, body)}
    if method == "google_oidc":
        return {"Authorization": f"Bearer {google_token(google_key)}"}
    if method == "hmac":
        return hmac_headers(body)
    return dict(AUTH)


def call(client, http_method: str, headers: dict, body: bytes = b"", path: str = "/process-pending"):
    if http_method == "get":
        return client.get(path, headers=headers)
    return client.post(path, data=body, headers={**headers, "Content-Type": "application/json"} if body else headers)


def assert_refused(response, *words):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "unauthorized"
    for word in words:
        assert word in response.json["message"], response.json["message"]
    return response.json["message"]


# --- each method admits the trigger endpoint, and only it ------------------------------------------------------------

@pytest.mark.parametrize("http_method", ["post", "get"])
@pytest.mark.parametrize("method", ["cron_secret", "qstash", "google_oidc", "hmac"])
def test_each_method_admits_process_pending(client, google_key, clean_db, method, http_method):
    insert_jobs(clean_db, 2, "test.echo")
    response = call(client, http_method, credentials(method, google_key))
    assert response.status_code == 200, response.json
    assert response.json["claimed"] == 2


@pytest.mark.parametrize("method", ["qstash", "hmac"])
def test_the_signed_body_carries_the_parameters(client, google_key, clean_db, method):
    insert_jobs(clean_db, 5, "test.echo")
    body = json.dumps({"limit": 2}).encode()
    response = call(client, "post", credentials(method, google_key, body), body)
    assert response.status_code == 200 and response.json["claimed"] == 2


@pytest.mark.parametrize("method", ["qstash", "google_oidc", "hmac"])
@pytest.mark.parametrize("path", ["/jobs", "/jobs/1", "/openapi.json", "/queue/health", "/metrics"])
def test_signed_methods_do_not_admit_other_endpoints(client, google_key, method, path):
    response = client.get(path, headers=credentials(method, google_key, url=f"http://localhost{path}"))
    assert response.status_code == 401 and response.json["error"] == "unauthorized"


def test_cron_secret_still_admits_everything(client):
    for path in ("/jobs", "/openapi.json", "/queue/health", "/process-pending"):
        assert client.get(path, headers=AUTH).status_code == 200, path


# --- refusals -------------------------------------------------------------------------------------------------------

def test_refusals_name_the_method_and_the_reason(client, google_key):
    now = int(time.time())
    cases = [
        ({"Upstash-Signature": qstash_token(LOCAL_URL, key=QSTASH_WRONG)}, "QStash signature: the signature verifies "
                                                                          "with neither"),
        ({"Upstash-Signature": qstash_token(LOCAL_URL, now=now - 900)}, "QStash signature: the token has expired"),
        ({"Upstash-Signature": qstash_token(LOCAL_URL, nbf=now + 600)}, "QStash signature: the token is not valid yet"),
        ({"Upstash-Signature": qstash_token("https://elsewhere.example/process-pending")},
         "QStash signature: the token was issued for another URL"),
        ({"Upstash-Signature": qstash_token(LOCAL_URL, b"{}")}, "QStash signature: the body does not match"),
        ({"Authorization": "Bearer " + google_token(google_key, aud="https://other/")},
         "Google OIDC token: the token's audience is not GOOGLE_OIDC_AUDIENCE"),
        ({"Authorization": "Bearer " + google_token(google_key, exp=now - 120, iat=now - 3700)},
         "Google OIDC token: the token has expired"),
        ({"Authorization": "Bearer " + unsigned_token({"alg": "none", "kid": "google-1"}, google_claims())},
         "Google OIDC token: only RS256 tokens are accepted"),
        ({"Authorization": "Bearer " + hs256_with_public_key(google_key, google_claims())},
         "Google OIDC token: only RS256 tokens are accepted"),
        (hmac_headers(timestamp=now - 301), "HMAC signature: the timestamp is more than 300 s away"),
        (hmac_headers(secret="another-secret-0123456789"), "HMAC signature: the signature is not HMAC-SHA256"),
    ]
    for headers, words in cases:
        message = assert_refused(client.post("/process-pending", headers=headers), words)
        for value in headers.values():  # the credential is never echoed, nor any part of a token
            assert value not in message
            assert not [part for part in value.split(".") if len(part) >= 12 and part[:12] in message]
        assert SECRET not in message and HMAC_SECRET not in message and QSTASH_CURRENT not in message


def test_a_bearer_that_is_neither_secret_nor_token_reports_both(client):
    message = assert_refused(client.post("/process-pending", headers={"Authorization": "Bearer guess-guess-guess"}),
                             "CRON_SECRET: wrong secret",
                             "Google OIDC token: the Bearer token is not a well-formed JWT")
    assert "guess" not in message


def test_every_method_tried_is_reported(client, google_key):
    headers = {"Upstash-Signature": qstash_token(LOCAL_URL, key=QSTASH_WRONG), **hmac_headers(b"x"),
               "X-Cron-Secret": "wrong-wrong-wrong-wrong"}
    assert_refused(client.post("/process-pending", headers=headers), "CRON_SECRET: wrong secret",
                   "QStash signature:", "HMAC signature:")


def test_one_method_verifying_is_enough(client, google_key):
    headers = {"Upstash-Signature": qstash_token(LOCAL_URL, key=QSTASH_WRONG), **hmac_headers()}
    assert client.post("/process-pending", headers=headers).status_code == 200


def test_missing_credentials_list_what_is_accepted(client):
    assert_refused(client.post("/process-pending"), "Missing credentials", "Upstash-Signature",
                   "X-Jobprocessor-Signature", "Google ID token", "CRON_SECRET")


def test_a_100_kb_token_is_refused(client):
    token = "e" * 100_000
    for headers in ({"Upstash-Signature": token}, {"Authorization": f"Bearer {token}"}):
        message = assert_refused(client.post("/process-pending", headers=headers), "longer than 8192")
        assert len(message) < 400


def test_methods_not_configured_say_so(database_url, clean_db, replays, jwks_server, google_key):
    app = build(database_url, jwks_server.url, QSTASH_CURRENT_SIGNING_KEY="", QSTASH_NEXT_SIGNING_KEY="",
                TRIGGER_HMAC_SECRET="")
    client = app.test_client()
    assert_refused(client.post("/process-pending", headers={"Upstash-Signature": qstash_token(LOCAL_URL)}),
                   "QStash signature: QSTASH_CURRENT_SIGNING_KEY is not set on this server")
    assert_refused(client.post("/process-pending", headers=hmac_headers()),
                   "HMAC signature: TRIGGER_HMAC_SECRET is not set on this server")
    assert client.post("/process-pending", headers=credentials("google_oidc", google_key)).status_code == 200


def test_no_method_configured_fails_closed_with_503(database_url, clean_db, google_key):
    app = create_app(make_settings(database_url, CRON_SECRET=""))
    client = app.test_client()
    for headers in ({}, AUTH, hmac_headers(), {"Upstash-Signature": qstash_token(LOCAL_URL)},
                    credentials("google_oidc", google_key)):
        response = client.post("/process-pending", headers=headers)
        assert response.status_code == 503 and response.json["error"] == "secret_not_configured"
        for name in ("CRON_SECRET", "QSTASH_CURRENT_SIGNING_KEY", "GOOGLE_OIDC_AUDIENCE", "TRIGGER_HMAC_SECRET"):
            assert name in response.json["message"]


def test_signed_methods_alone_leave_the_rest_of_the_api_closed(database_url, clean_db, replays, jwks_server,
                                                                google_key):
    app = build(database_url, jwks_server.url, CRON_SECRET="")
    client = app.test_client()
    assert client.post("/process-pending", headers=hmac_headers()).status_code == 200
    assert client.get("/jobs", headers=hmac_headers()).status_code == 503  # CRON_SECRET unset: as before
    assert_refused(client.post("/process-pending", headers={"X-Cron-Secret": SECRET}),
                   "CRON_SECRET: CRON_SECRET is not set on this server")


# --- QStash behind a proxy ------------------------------------------------------------------------------------------

def test_trigger_public_url_is_what_the_sub_must_match(database_url, clean_db, replays, jwks_server):
    app = build(database_url, jwks_server.url, TRIGGER_PUBLIC_URL="https://jobs.example.test/")
    client = app.test_client()
    public = "https://jobs.example.test/process-pending?limit=3&budget_s=5"
    assert client.post("/process-pending?limit=3&budget_s=5",
                       headers={"Upstash-Signature": qstash_token(public)}).status_code == 200
    assert_refused(client.post("/process-pending?limit=3&budget_s=5",
                               headers={"Upstash-Signature": qstash_token(LOCAL_URL + "?limit=3&budget_s=5")}),
                   "another URL")
    # the query string is part of the signed URL: changing it is refused
    assert_refused(client.post("/process-pending?limit=1000&budget_s=5",
                               headers={"Upstash-Signature": qstash_token(public)}), "another URL")


# --- replays -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["qstash", "hmac"])
def test_a_replayed_signature_is_refused(client, google_key, replays, method):
    headers = credentials(method, google_key)
    assert client.post("/process-pending", headers=headers).status_code == 200
    for _ in range(2):
        assert_refused(client.post("/process-pending", headers=headers), "replay refused")
    # a fresh credential is admitted (an HMAC of the same body needs another second: the signature is the key; the
    # second before the first one's, not now's less one, which is the first one's when a second has turned since)
    fresh = (credentials(method, google_key) if method == "qstash"
             else hmac_headers(timestamp=int(headers["X-Jobprocessor-Timestamp"]) - 1))
    assert client.post("/process-pending", headers=fresh).status_code == 200
    with replays.connect() as conn:
        rows = conn.execute(text("SELECT method, expires_at - now() AS left FROM trigger_replays")).all()
    assert [row.method for row in rows] == [method, method]
    # kept while the credential could verify (5 min of life + leeway, or the 300 s window) plus the margin
    assert all(200 < row.left.total_seconds() <= 300 + 30 + replay_store.MARGIN_S + 1 for row in rows)


def test_a_replay_with_a_different_case_of_hex_is_still_a_replay(client):
    headers = hmac_headers()
    assert client.post("/process-pending", headers=headers).status_code == 200
    upper = {**headers, "X-Jobprocessor-Signature": "sha256=" + headers["X-Jobprocessor-Signature"][7:].upper()}
    assert_refused(client.post("/process-pending", headers=upper), "replay refused")


def test_a_replay_to_another_app_instance_sharing_the_database_is_refused(signed_app, database_url, jwks_server,
                                                                          google_key):
    other = build(database_url, jwks_server.url)  # its own engine and pool: another instance
    for method in ("qstash", "hmac"):
        headers = credentials(method, google_key)
        assert signed_app.test_client().post("/process-pending", headers=headers).status_code == 200
        assert_refused(other.test_client().post("/process-pending", headers=headers), "replay refused")


def test_concurrent_uses_of_one_signature_admit_exactly_one(signed_app, database_url, jwks_server, google_key):
    apps = [signed_app, build(database_url, jwks_server.url)]
    headers = credentials("qstash", google_key)
    statuses, barrier = [], threading.Barrier(8)

    def send(i):
        client = apps[i % 2].test_client()
        barrier.wait()
        with apps[i % 2].app_context():
            statuses.append(client.post("/process-pending", headers=headers).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200] + [401] * 7


def test_the_replay_record_is_pruned_in_bounded_batches(replays, engine):
    with replays.begin() as conn:
        conn.execute(text("INSERT INTO trigger_replays SELECT 'hmac', 'old-' || g, now() - interval '1 hour' "
                          "FROM generate_series(1, 250) g"))
        conn.execute(text("INSERT INTO trigger_replays VALUES ('hmac', 'live', now() + interval '5 minutes')"))
    assert replay_store.remember(engine, "qstash", "jwt_new", time.time() + 300)

    def left():
        with replays.connect() as conn:
            return conn.execute(text("SELECT count(*) FILTER (WHERE key LIKE 'old-%'), "
                                     "count(*) FILTER (WHERE key IN ('live', 'jwt_new')) FROM trigger_replays")).one()

    assert tuple(left()) == (250 - replay_store.PRUNE_BATCH, 2)
    for i in range(3):
        replay_store.remember(engine, "qstash", f"jwt_{i}", time.time() + 300)
    assert tuple(left()) == (0, 2)
    assert not replay_store.remember(engine, "hmac", "live", time.time() + 300)


def test_an_entry_past_its_time_no_longer_blocks(replays, engine):
    assert replay_store.remember(engine, "hmac", "k", time.time() - replay_store.MARGIN_S - 5)
    with replays.begin() as conn:  # older entries ahead of it, so the next prune's batch does not reach it
        conn.execute(text("INSERT INTO trigger_replays SELECT 'qstash', 'old-' || g, now() - interval '1 hour' "
                          "FROM generate_series(1, :n) g"), {"n": replay_store.PRUNE_BATCH})
    # still there, but past its time: absent for the check
    assert replay_store.remember(engine, "hmac", "k", time.time() + 300)
    assert not replay_store.remember(engine, "hmac", "k", time.time() + 300)


def test_the_database_down_at_the_replay_check_is_503_not_admitted(jwks_server, google_key):
    app = build(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing_here", jwks_server.url)
    response = app.test_client().post("/process-pending", headers=hmac_headers())
    assert response.status_code == 503 and response.json["error"] == "database_unavailable"


# --- nothing but a verified signature reaches the database -----------------------------------------------------------

def test_refused_credentials_send_no_query(client, signed_engine, google_key):
    now = int(time.time())
    attempts = [
        {"Upstash-Signature": qstash_token(LOCAL_URL, key=QSTASH_WRONG)},
        {"Upstash-Signature": qstash_token(LOCAL_URL, now=now - 900)},
        {"Upstash-Signature": qstash_token("https://elsewhere.example/process-pending")},
        {"Upstash-Signature": "e" * 100_000},
        {"Authorization": "Bearer " + google_token(RsaKey("google-1"))},  # the right kid, the wrong key
        {"Authorization": "Bearer " + google_token(google_key, kid="unknown")},
        {"Authorization": "Bearer " + hs256_with_public_key(google_key, google_claims())},
        {"Authorization": "Bearer " + unsigned_token({"alg": "none"}, google_claims())},
        hmac_headers(secret="another-secret-0123456789"),
        hmac_headers(timestamp=now - 400),
        {"X-Cron-Secret": "guess-guess-guess-guess"},
    ]
    statements = []
    listener = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
    event.listen(signed_engine, "before_cursor_execute", listener)
    try:
        for headers in attempts:
            for method in ("post", "get"):
                assert call(client, method, headers).status_code == 401
        assert statements == []
        # the listener does see what the app sends: a verified signature's replay record
        assert call(client, "post", hmac_headers()).status_code == 200
        assert any("trigger_replays" in statement for statement in statements)
    finally:
        event.remove(signed_engine, "before_cursor_execute", listener)


# --- /healthz and the start-up line --------------------------------------------------------------------------------

def test_healthz_says_which_methods_are_on(client, database_url, clean_db):
    body = client.get("/healthz").json
    assert body["auth"] == {"cron_secret": True, "qstash": True, "google_oidc": True, "hmac": True}
    text_ = client.get("/healthz").get_data(as_text=True)
    for secret in (SECRET, HMAC_SECRET, QSTASH_CURRENT, QSTASH_NEXT, EMAIL):
        assert secret not in text_
    plain = create_app(make_settings(database_url)).test_client().get("/healthz").json
    assert plain["auth"] == {"cron_secret": True, "qstash": False, "google_oidc": False, "hmac": False}


def test_the_start_up_line_says_which_methods_are_on(database_url, jwks_server, caplog):
    with caplog.at_level(logging.INFO, logger="jobprocessor"):
        build(database_url, jwks_server.url, TRIGGER_HMAC_SECRET="")
    lines = [r.getMessage() for r in caplog.records if '"auth_methods"' in r.getMessage()]
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"event": "auth_methods", "cron_secret": True, "qstash": True,
                                    "google_oidc": True, "hmac": False}
    for secret in (SECRET, QSTASH_CURRENT, QSTASH_NEXT):
        assert secret not in lines[0]
