"""Auth under attack, against a real gunicorn: the comparison is constant-time, the secret never reaches a log,
an error message or any response, a weak secret stops start-up with one clear line, and a brute-force burst of
wrong secrets sends not one byte to PostgreSQL (measured by a TCP proxy between the app and the database)."""
from __future__ import annotations

import hmac
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from jobprocessor.api.openapi import spec
from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.proxy import CountingProxy
from tests.support.settings import AUTH, SECRET

pytestmark = pytest.mark.e2e

WRONG = [
    SECRET[:-1],                        # a prefix: the classic timing-attack probe
    SECRET + "x",
    SECRET[:-1] + chr(ord(SECRET[-1]) + 1),  # same length, last character off
    "x" * len(SECRET),
    "a",
    "ünïcödé-" * 4,
]


# --- the comparison -------------------------------------------------------------------------------------------------

def test_every_presented_secret_goes_through_compare_digest(client, monkeypatch):
    import jobprocessor.triggers.cron_secret as auth

    calls = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for wrong in WRONG:
        for headers in ({"Authorization": f"Bearer {wrong}"}, {"X-Cron-Secret": wrong}):
            assert client.get("/jobs", headers=headers).status_code == 401
    assert len(calls) == 2 * len(WRONG)
    assert all(b == SECRET.encode() and isinstance(a, bytes) for a, b in calls)
    assert client.get("/jobs", headers=AUTH).status_code == 200 and len(calls) == 2 * len(WRONG) + 1


# --- never in logs, messages or responses -----------------------------------------------------------------------------

def test_the_secret_never_appears_in_logs_errors_or_responses(database_url, clean_db):
    insert_jobs(clean_db, 3, "test.fail")  # handler errors are logged
    insert_jobs(clean_db, 3, "test.echo")
    seen = []
    server = Gunicorn(database_url, workers=1, threads=2, env={"LOG_LEVEL": "DEBUG"})
    server.env.update(GUNICORN_ACCESSLOG="-", GUNICORN_CMD_ARGS="--log-level debug")
    with server:
        base = server.base
        paths = [path for path, item in spec()["paths"].items() if "get" in item and "{" not in path]
        for path in paths + ["/jobs/1", "/jobs/999999", "/jobs/x", "/batches/b1", "/nope"]:
            seen.append(requests.get(base + path, headers=AUTH, timeout=30))
        seen.append(requests.post(base + "/process-pending", headers=AUTH, timeout=30))
        seen.append(requests.post(base + "/jobs", json={"type": "no.such"}, headers=AUTH, timeout=10))
        seen.append(requests.post(base + "/jobs", data=b"\xff", headers={**AUTH, "Content-Type": "application/json"},
                                  timeout=10))
        seen.append(requests.delete(base + "/jobs", headers=AUTH, timeout=10))
        for wrong in WRONG[:4]:
            seen.append(requests.get(base + "/jobs", headers={"Authorization": f"Bearer {wrong}"}, timeout=10))
            seen.append(requests.post(base + "/process-pending", headers={"X-Cron-Secret": wrong}, timeout=10))
        output = server.output()
    # the logs are really there: debug lines, the access log, the call's log line, the 401s
    assert "[DEBUG]" in output and '"event": "process_pending"' in output
    assert '"POST /process-pending HTTP/1.1" 200' in output and '"GET /jobs HTTP/1.1" 401' in output
    assert {401, 404, 400, 405, 422} <= {r.status_code for r in seen}
    for response in seen:
        everything = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
        assert SECRET not in everything and SECRET[5:-5] not in everything, response.url
    for leaked in (SECRET, SECRET[5:-5], SECRET[:-1]):
        assert leaked not in output


# --- a weak secret stops start-up ------------------------------------------------------------------------------------

@pytest.mark.parametrize("weak", ["fifteen-chars!!", "weak-Secret-9"])
def test_a_secret_shorter_than_16_stops_gunicorn_with_one_clear_line(database_url, weak):
    server = Gunicorn(database_url, workers=1, threads=1, env={})
    server.env["CRON_SECRET"] = weak
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="gunicorn did not start"):
        with server:
            pass
    assert time.monotonic() - started < 20
    assert server.proc.returncode not in (0, None)
    lines = server.output().splitlines()
    # the line on its own (gunicorn's master refuses before forking a worker), not in a traceback
    assert lines == ["jobprocessor: configuration error: CRON_SECRET must be at least 16 characters long"]
    assert weak not in server.output()  # the refused value is not echoed


# --- brute force never reaches the database --------------------------------------------------------------------------



def test_a_brute_force_burst_sends_nothing_to_the_database(database_url, clean_db):
    parts = urlsplit(database_url)
    proxy = CountingProxy(parts.hostname, parts.port)
    proxied_url = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    try:
        # DB_POOL_MIN=0: no worker opens connections on its own as it boots (on a busy machine the second worker's
        # warm-up could fall into the burst); every connection the proxy sees is then one a request asked for
        with Gunicorn(proxied_url, workers=2, threads=4, env={"DB_POOL_MIN": "0"}) as server:
            assert requests.post(server.base + "/process-pending", headers=AUTH, timeout=30).status_code == 200
            for _ in range(4):  # both workers have served a request (and so loaded the app) before the burst
                assert requests.get(server.base + "/healthz", timeout=30).status_code == 200
            before = proxy.snapshot()
            assert before[1] > 0  # the app's traffic does go through the proxy

            statuses, lock = [], threading.Lock()
            paths = ["/process-pending", "/jobs", "/jobs/1", "/jobs/1/retry", "/openapi.json", "/queue/health"]

            def attacker(n: int):
                http = requests.Session()
                for i in range(50):
                    guess = f"{SECRET[:n % len(SECRET)]}{i:04d}"
                    header = {"Authorization": f"Bearer {guess}"} if i % 2 else {"X-Cron-Secret": guess}
                    method = http.post if i % 3 == 0 else http.get
                    response = method(server.base + paths[i % len(paths)], headers=header, timeout=30)
                    with lock:
                        statuses.append(response.status_code)

            started = time.monotonic()
            attackers = [threading.Thread(target=attacker, args=(n,)) for n in range(20)]
            for thread in attackers:
                thread.start()
            for thread in attackers:
                thread.join(120)
            burst_s = time.monotonic() - started
            after = proxy.snapshot()
            assert len(statuses) == 1000 and set(statuses) <= {401, 404, 405}
            assert statuses.count(401) >= 800
            assert after == before, f"{after[0] - before[0]} connections, {after[1] - before[1]} bytes during the burst"
            print(f"burst: 1000 wrong secrets in {burst_s:.2f} s ({1000 / burst_s:.0f}/s), database bytes: 0")

            # and the right secret right after still works, through the same proxy
            assert requests.post(server.base + "/process-pending", headers=AUTH, timeout=30).status_code == 200
            assert proxy.snapshot()[1] > after[1]
    finally:
        proxy.close()
