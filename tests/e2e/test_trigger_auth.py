"""Signed triggers against real gunicorns on loopback: a replay is refused by another instance (another process)
sharing the database, Google tokens verify against a JWKS fetched over real HTTP by the worker, the README's
crontab HMAC recipe (openssl + curl) is admitted as written, and a brute-force burst of forged signatures of every
kind sends not one byte to PostgreSQL."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import text

from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.proxy import CountingProxy
from tests.support.settings import ROOT, SECRET
from tests.support.trigger_fixtures import (
    AUDIENCE,
    EMAIL,
    HMAC_SECRET,
    QSTASH_CURRENT,
    QSTASH_NEXT,
    QSTASH_WRONG,
    JwksServer,
    RsaKey,
    google_claims,
    google_token,
    hmac_headers,
    hs256_with_public_key,
    qstash_token,
    unsigned_token,
)

pytestmark = pytest.mark.e2e

PUBLIC = "https://jobs.example.test"  # both instances sit behind one public URL, as behind a load balancer


@pytest.fixture(scope="module")
def google_key():
    return RsaKey("google-1")


@pytest.fixture(scope="module")
def jwks_server(google_key):
    server = JwksServer([google_key])
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(database_url, jwks_server):
    """One gunicorn worker (one JWKS cache) with every method on, for the tests that need one instance."""
    with Gunicorn(database_url, workers=1, threads=4, env=signed_env(jwks_server.url)) as gunicorn:
        yield gunicorn


@pytest.fixture
def replays(raw_engine):
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE trigger_replays"))
    return raw_engine


def signed_env(jwks_url: str, **extra) -> dict:
    return {"QSTASH_CURRENT_SIGNING_KEY": QSTASH_CURRENT, "QSTASH_NEXT_SIGNING_KEY": QSTASH_NEXT,
            "TRIGGER_PUBLIC_URL": PUBLIC, "GOOGLE_OIDC_AUDIENCE": AUDIENCE, "GOOGLE_OIDC_ALLOWED_EMAILS": EMAIL,
            "GOOGLE_OIDC_JWKS_URL": jwks_url, "TRIGGER_HMAC_SECRET": HMAC_SECRET, **extra}


def test_a_replay_to_another_instance_is_refused(database_url, clean_db, replays, jwks_server):
    env = signed_env(jwks_server.url)
    with Gunicorn(database_url, workers=1, threads=4, env=env) as first, \
            Gunicorn(database_url, workers=1, threads=4, env=env) as second:
        for make in (lambda: {"Upstash-Signature": qstash_token(PUBLIC + "/process-pending")}, hmac_headers):
            headers = make()
            assert requests.post(first.base + "/process-pending", headers=headers, timeout=30).status_code == 200
            refused = requests.post(second.base + "/process-pending", headers=headers, timeout=30)
            assert refused.status_code == 401 and "replay refused" in refused.json()["message"]

        # the same signature sent to both instances at once: exactly one call is admitted
        headers, statuses, barrier = {"Upstash-Signature": qstash_token(PUBLIC + "/process-pending")}, [], \
            threading.Barrier(8)

        def send(base):
            barrier.wait()
            statuses.append(requests.post(base + "/process-pending", headers=headers, timeout=30).status_code)

        threads = [threading.Thread(target=send, args=((first, second)[i % 2].base,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [200] + [401] * 7
        output = first.output() + second.output()
    assert '"event": "auth_methods", "cron_secret": true, "qstash": true, "google_oidc": true, "hmac": true' \
        in output
    for secret in (SECRET, QSTASH_CURRENT, QSTASH_NEXT, HMAC_SECRET, headers["Upstash-Signature"]):
        assert secret not in output


def test_google_tokens_against_a_jwks_served_over_http(server, clean_db, replays, jwks_server, google_key):
    insert_jobs(clean_db, 3, "test.echo")
    url = server.base + "/process-pending"
    fetched = jwks_server.count()
    bearer = {"Authorization": f"Bearer {google_token(google_key)}"}
    response = requests.post(url, headers=bearer, timeout=30)
    assert response.status_code == 200 and response.json()["claimed"] == 3
    assert requests.get(url, headers=bearer, timeout=30).status_code == 200  # Google tokens are reusable
    assert jwks_server.count() == fetched + 1  # fetched by the worker on first use, then cached

    # a flood of tokens naming keys nobody has: exactly one refetch
    attacker = RsaKey("attacker")
    for i in range(30):
        forged = {"Authorization": f"Bearer {google_token(attacker, kid=f'kid-{i}')}"}
        refused = requests.post(url, headers=forged, timeout=30)
        assert refused.status_code == 401 and "kid" in refused.json()["message"]
    assert jwks_server.count() == fetched + 2

    # Google's URL fails: the keys the worker holds keep working
    jwks_server.down = True
    try:
        assert requests.post(url, headers={"Authorization": f"Bearer {google_token(google_key)}"},
                             timeout=30).status_code == 200
    finally:
        jwks_server.down = False


def test_no_google_keys_means_every_google_token_is_refused(database_url, clean_db, replays, google_key):
    closed = JwksServer([google_key])
    closed.close()  # nothing listens there any more
    with Gunicorn(database_url, workers=1, threads=2, env=signed_env(closed.url)) as server:
        for _ in range(3):
            response = requests.post(server.base + "/process-pending",
                                     headers={"Authorization": f"Bearer {google_token(google_key)}"}, timeout=30)
            assert response.status_code == 401
            assert "no Google signing keys are available" in response.json()["message"]
        assert '"event": "jwks_fetch_failed"' in server.output()


def readme_crontab_line() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**crontab with the HMAC**"):]
    return re.search(r"```cron\n(.+?)\n```", section, re.S).group(1)


def test_the_readmes_crontab_hmac_recipe_is_admitted(server, clean_db, replays, tmp_path):
    insert_jobs(clean_db, 2, "test.echo")
    secret_file = tmp_path / "hmac"
    secret_file.write_text(HMAC_SECRET)
    fields = readme_crontab_line().split(" ", 5)
    assert fields[:5] == ["*"] * 5
    # what cron runs: the command field, with cron's \% turned back into %
    command = fields[5].replace("\\%", "%").replace("/etc/jobprocessor/hmac", str(secret_file))
    command = command.replace("https://jobs.example.com", server.base).replace(">/dev/null", "")
    assert server.base in command and "\\" not in command
    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert '"claimed":2' in run.stdout.replace(" ", "")
    # the same line with another secret is refused (curl -f fails)
    secret_file.write_text("not-the-secret-0123456789")
    time.sleep(1.1)  # another second: not a replay of the first
    assert subprocess.run(["sh", "-c", command], capture_output=True, timeout=60).returncode != 0
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM trigger_replays WHERE method = 'hmac'")).scalar() == 1


def test_a_100_kb_signature_header_is_refused_and_the_worker_keeps_serving(server, clean_db, replays):
    for header in ("Upstash-Signature", "Authorization"):
        response = requests.post(server.base + "/process-pending", headers={header: "e" * 100_000}, timeout=30)
        assert 400 <= response.status_code < 500  # gunicorn's header limit (8190 bytes) answers first
    near_limit = requests.post(server.base + "/process-pending", headers={"Upstash-Signature": "e" * 8100},
                               timeout=30)
    assert near_limit.status_code == 401 and near_limit.json()["error"] == "unauthorized"
    assert "longer than 8192" not in near_limit.json()["message"]  # 8100 passes the size check, then fails
    assert requests.post(server.base + "/process-pending", headers=hmac_headers(), timeout=30).status_code == 200


def test_forged_signatures_of_every_kind_send_nothing_to_the_database(database_url, clean_db, replays, jwks_server,
                                                                      google_key):
    parts = urlsplit(database_url)
    proxy = CountingProxy(parts.hostname, parts.port)
    proxied_url = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    attacker = RsaKey("attacker")
    now = int(time.time())
    url = PUBLIC + "/process-pending"
    fetched = jwks_server.count()
    forgeries = [
        {"Upstash-Signature": qstash_token(url, key=QSTASH_WRONG)},
        {"Upstash-Signature": qstash_token(url, now=now - 900)},
        {"Upstash-Signature": qstash_token(url, nbf=now + 900)},
        {"Upstash-Signature": qstash_token(url, b"tampered")},
        {"Upstash-Signature": qstash_token("https://elsewhere.example/process-pending")},
        {"Upstash-Signature": "e" * 8000},
        {"Authorization": "Bearer " + google_token(attacker, kid="google-1")},
        {"Authorization": "Bearer " + google_token(attacker)},  # an unknown kid
        {"Authorization": "Bearer " + google_token(google_key, aud="https://other/")},
        {"Authorization": "Bearer " + hs256_with_public_key(google_key, google_claims())},
        {"Authorization": "Bearer " + unsigned_token({"alg": "none", "kid": "google-1"}, google_claims())},
        hmac_headers(secret="another-secret-0123456789"),
        hmac_headers(timestamp=now - 400),
        {"X-Jobprocessor-Timestamp": str(now), "X-Jobprocessor-Signature": "sha256=" + "0" * 64},
        {"X-Cron-Secret": SECRET[:-1]},
    ]
    try:
        with Gunicorn(proxied_url, workers=2, threads=4, env=signed_env(jwks_server.url)) as server:
            assert requests.post(server.base + "/process-pending", headers=hmac_headers(), timeout=30).status_code \
                == 200
            deadline, before = time.monotonic() + 20, proxy.snapshot()
            while time.monotonic() < deadline:  # both workers' pools are open and quiet
                time.sleep(0.5)
                now_seen = proxy.snapshot()
                if now_seen == before and now_seen[0] >= 4:
                    break
                before = now_seen
            statuses, lock = [], threading.Lock()

            def attacker_thread(n):
                http = requests.Session()
                for i in range(40):
                    headers = forgeries[(n + i) % len(forgeries)]
                    method = http.post if i % 2 else http.get
                    response = method(server.base + "/process-pending", headers=headers, timeout=30)
                    with lock:
                        statuses.append(response.status_code)

            threads = [threading.Thread(target=attacker_thread, args=(n,)) for n in range(15)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            after = proxy.snapshot()
            assert len(statuses) == 600 and set(statuses) == {401}
            assert after == before, f"{after[0] - before[0]} connections, {after[1] - before[1]} bytes"
            # per worker, the first fetch and one refetch for the unknown kid, however many forged tokens came
            assert jwks_server.count() - fetched <= 2 * 2
            assert requests.post(server.base + "/process-pending", headers=hmac_headers(timestamp=now - 1),
                                 timeout=30).status_code == 200
            assert proxy.snapshot()[1] > after[1]
    finally:
        proxy.close()


def test_readme_documents_every_trigger_setting_and_recipe():
    readme = (ROOT / "README.md").read_text()
    for needle in ("gcloud scheduler jobs create http", "--oidc-service-account-email", "gcloud tasks create-http-task",
                   "Upstash-Cron", "openssl dgst -sha256 -hmac", "X-Jobprocessor-Timestamp"):
        assert needle in readme
    assert Path(ROOT / "sql" / "070_trigger_replays_v1.sql").name in (ROOT / "sql" / "README.md").read_text()
