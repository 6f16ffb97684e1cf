"""Hostile requests against a real gunicorn (its own request parsing, chunked bodies, raw bytes on the socket):
bodies over the limit are 413 whether or not they declare a length, malformed input is a 4xx JSON error with a
message, and the worker keeps serving. The same inputs over the Flask test client: test_hostile_input.py."""
from __future__ import annotations

import json
import re
import socket

import pytest
import requests

from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH, SECRET

pytestmark = pytest.mark.e2e

LIMIT = 64 * 1024  # MAX_REQUEST_BYTES for this server: small, so the tests send little


@pytest.fixture(scope="module")
def server(database_url):
    # the access log on (into the server's output): what it holds is tested too
    gunicorn = Gunicorn(database_url, workers=1, threads=4, env={"MAX_REQUEST_BYTES": str(LIMIT)})
    gunicorn.env["GUNICORN_ACCESSLOG"] = "-"
    with gunicorn:
        yield gunicorn


def assert_json_error(response, status):
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error"] and body["message"]
    assert SECRET not in response.text


def raw_request(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("path", ["/jobs", "/process-pending"])
def test_a_body_over_the_limit_is_413_with_a_length(server, clean_db, path):
    response = requests.post(server.base + path, data=b"[" + b"1," * LIMIT + b"1]",
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert_json_error(response, 413)


def test_a_chunked_body_over_the_limit_is_413_without_a_length(server, clean_db):
    def chunks():
        for _ in range(LIMIT // 1024 + 8):
            yield b" " * 1024

    response = requests.post(server.base + "/jobs", data=chunks(),
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert_json_error(response, 413)
    assert requests.get(server.base + "/healthz", timeout=5).status_code == 200


def test_a_chunked_body_under_the_limit_is_read(server, clean_db):
    response = requests.post(server.base + "/jobs", data=iter([b'{"type": ', b'"test.echo"}']),
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path,body,content_type,status", [
    ("/jobs", b"\xff\xfe\xfd", "application/json", 400),
    ("/jobs", b'{"type": "test.echo"}', "text/plain", 415),
    ("/jobs", b'{"type": "test.echo"}', "application/xml", 415),
    ("/jobs", b"[" * 20_000 + b"]" * 20_000, "application/json", 400),
    ("/jobs", b'{"type": "test.echo", "payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "application/json",
     400),
    ("/jobs", b'{"type": "test.echo", "payload": {"x": NaN}}', "application/json", 400),
    ("/jobs", b'{"type": "test.echo", "payload": {"s": "\\u0000"}}', "application/json", 400),
    ("/process-pending", b'{"limit": 1e9}', "application/json", 400),
    ("/process-pending", b'{"budget_s": -5}', "application/json", 400),
    ("/process-pending", b'{"budget_s": NaN}', "application/json", 400),
    ("/process-pending", b"\xc3\x28", "application/json", 400),
])
def test_malformed_bodies_are_json_4xx(server, clean_db, path, body, content_type, status):
    response = requests.post(server.base + path, data=body, headers={**AUTH, "Content-Type": content_type},
                             timeout=30)
    assert_json_error(response, status)


@pytest.mark.parametrize("query", ["limit=1e9", "limit=-1", "budget_s=-0.5", "budget_s=NaN", "budget_s=inf",
                                   "limit=%ZZ", "limit=%C2%B2", "limit=" + "9" * 5000, "type=%00",
                                   "budget_s=1e309"])
def test_bad_query_values_are_400(server, clean_db, query):
    assert_json_error(requests.post(f"{server.base}/process-pending?{query}", headers=AUTH, timeout=30), 400)


def test_raw_bytes_in_headers_are_a_401_not_a_crash(server, clean_db):
    answer = raw_request(server, b"POST /process-pending HTTP/1.1\r\nHost: x\r\nX-Cron-Secret: \xff\xfe\x80secret\r\n"
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and b'"error":"unauthorized"' in answer
    answer = raw_request(server, b"GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\x28\xa0\r\n"
                                 b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401")


def test_a_request_line_past_gunicorns_limit_is_refused_before_the_app(server, clean_db):
    # gunicorn itself answers (limit_request_line = 8190), before any app code runs: as JSON like every error
    response = requests.get(f"{server.base}/jobs?store_id={'x' * 9000}", headers=AUTH, timeout=30)
    assert_json_error(response, 414)
    assert len(response.content) < 500
    assert requests.get(server.base + "/healthz", timeout=5).status_code == 200


def test_gunicorns_own_refusals_are_json(server, clean_db):
    headers = {f"X-Filler-{i}": "1" for i in range(120)}  # past limit_request_fields = 100
    assert_json_error(requests.get(server.base + "/healthz", headers=headers, timeout=30), 431)
    answer = raw_request(server, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"Content-Type: application/json" in head, answer[:300]
    assert json.loads(body)["error"] == "bad_request"


def _json_of_size(size: int) -> bytes:
    start, end = b'{"type": "test.echo", "payload": {"pad": "', b'"}}'
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("chunked", [True, False])
def test_a_body_of_exactly_the_limit_is_read_chunked_or_not(server, clean_db, chunked):
    body = _json_of_size(LIMIT)
    data = iter([body[:1000], body[1000:]]) if chunked else body
    response = requests.post(server.base + "/jobs", data=data, headers={**AUTH, "Content-Type": "application/json"},
                             timeout=30)
    assert response.status_code == 201, response.text[:300]
    over = _json_of_size(LIMIT + 1)
    data = iter([over[:1000], over[1000:]]) if chunked else over
    assert_json_error(requests.post(server.base + "/jobs", data=data,
                                    headers={**AUTH, "Content-Type": "application/json"}, timeout=30), 413)


def test_the_access_log_has_times_and_no_query_strings(server, clean_db):
    requests.get(f"{server.base}/jobs?secret=leaked-by-a-caller-0000&limit=1", headers=AUTH, timeout=10)
    lines = [line for line in server.output().splitlines() if '"GET /jobs HTTP/1.1"' in line]
    assert lines, server.output()[-2000:]
    assert "leaked-by-a-caller-0000" not in server.output() and "limit=1" not in server.output()
    assert re.match(r"^\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] 127\.0\.0\.1 ", lines[-1]), lines[-1]


def test_the_worker_still_serves_after_all_this(server, clean_db):
    assert requests.post(server.base + "/jobs", json={"type": "test.echo"}, headers=AUTH, timeout=10).status_code \
        == 201
    assert requests.post(server.base + "/process-pending", headers=AUTH, timeout=30).json()["succeeded"] == 1
