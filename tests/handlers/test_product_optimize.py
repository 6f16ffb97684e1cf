"""product.optimize end to end in one process: the real SDK against the fake OpenAI server over loopback HTTP,
jobs run through POST /process-pending on a real PostgreSQL; plus the pure payload and answer checks."""
from __future__ import annotations

import json
import logging
import time

import pytest
from sqlalchemy import text

from jobprocessor import create_app
from jobprocessor.handlers import PermanentError
from jobprocessor.handlers.openai_call import UpstreamError
from jobprocessor.handlers.product_optimize import build_messages, parse_answer, validate_payload
from tests.support.db import fetch_jobs
from tests.support.fake_openai import FakeOpenAI, openai_charge
from tests.support.gunicorn import free_port
from tests.support.limiter_fixtures import fake, fresh_limiter, limiter_row, openai_settings  # noqa: F401 - fixtures
from tests.support.product_calls import process
from tests.support.settings import AUTH

PRODUCT = {"title": "Organic cotton T-shirt", "description": "Soft 180 g/m² jersey tee.", "sku": "TS-2041",
           "vendor": "Acme"}


@pytest.fixture
def make_app(database_url, clean_db, fresh_limiter):
    """Apps with their own settings; each gets a test client. Disposed at the end."""
    apps = []

    def build(fake_server: FakeOpenAI | None, **overrides):
        app = create_app(openai_settings(database_url, fake_server, **overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app.test_client()

    yield build
    from jobprocessor.extensions import db

    for app in apps:
        with app.app_context():
            db.engine.dispose()


def enqueue(client, n: int = 1, marker: str = "", **payload) -> list[int]:
    jobs = [{"type": "product.optimize", "store_id": f"s{i % 2}",
             "payload": {"product": dict(PRODUCT, title=f"{PRODUCT['title']} #{i} {marker}".strip()), **payload}}
            for i in range(n)]
    response = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json["ids"]




def drain(client, engine, budget_s: float = 10, max_calls: int = 100) -> int:
    """Call /process-pending until no job is pending (as a cron caller would; a call that found nothing due is
    followed by a short pause, as jobs the limiter rescheduled come due again); returns the calls."""
    for calls in range(1, max_calls + 1):
        if process(client, budget_s=budget_s)["claimed"] == 0:
            time.sleep(0.2)
        if not fetch_jobs(engine, "status = 'pending'"):
            return calls
    raise AssertionError("jobs still pending after %d calls" % max_calls)


def seconds_until_due(engine, job_id: int) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT extract(epoch FROM run_at - now()) FROM jobs WHERE id = :id"),
                                  {"id": job_id}).scalar())


def make_due(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() WHERE status = 'pending'"))


# --- the payload and the answer (pure) --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, message", [
    (None, "JSON object"), ([], "JSON object"), ({}, "product"), ({"product": {}}, "product"),
    ({"product": "a shirt"}, "product"), ({"product": {"sku": "A-1"}}, "text to rewrite"),
    ({"product": {"title": "   "}}, "text to rewrite"), ({"product": {"title": "x" * 30_000}}, "larger"),
    ({"product": {"title": "A"}, "instruction": "typo"}, "unknown payload field 'instruction'"),
    ({"product": {"title": "A"}, "instructions": 5}, "instructions"),
    ({"product": {"title": "A"}, "instructions": "x" * 2001}, "instructions"),
    ({"product": {"title": "A"}, "language": ""}, "language"), ({"product": {"title": "A"}, "language": 7}, "language"),
])
def test_bad_payloads_are_permanent(payload, message):
    with pytest.raises(PermanentError, match=message):
        validate_payload(payload)


def test_good_payload_and_its_messages():
    request = validate_payload({"product": PRODUCT, "instructions": "  mention free shipping ", "language": "de"})
    assert request.instructions == "mention free shipping" and request.language == "de"
    system, user = build_messages(request)
    assert system["role"] == "system" and "never invent" in system["content"]
    assert "language: de" in user["content"] and "mention free shipping" in user["content"]
    assert json.dumps(PRODUCT, ensure_ascii=False, sort_keys=True) in user["content"]
    plain = build_messages(validate_payload({"product": {"name": "Lamp"}}))[1]["content"]
    assert "language of the product data" in plain and "instructions" not in plain


GOOD_ANSWER = {"title": "T", "description": "D", "seo_title": "S", "seo_description": "M", "keywords": ["a", "b"]}


def test_parse_answer_accepts_the_schema_and_trims():
    answer = parse_answer(json.dumps(dict(GOOD_ANSWER, title="  Tee  ")), "stop")
    assert answer == dict(GOOD_ANSWER, title="Tee")


@pytest.mark.parametrize("content, finish, message", [
    (None, "stop", "empty"), ("not json", "stop", "not JSON"), ('["a"]', "stop", "required fields"),
    (json.dumps({k: v for k, v in GOOD_ANSWER.items() if k != "title"}), "stop", "required fields"),
    (json.dumps(dict(GOOD_ANSWER, extra=1)), "stop", "required fields"),
    (json.dumps(dict(GOOD_ANSWER, title="")), "stop", "title"),
    (json.dumps(dict(GOOD_ANSWER, seo_title="x" * 121)), "stop", "seo_title"),
    (json.dumps(dict(GOOD_ANSWER, description=3)), "stop", "description"),
    (json.dumps(dict(GOOD_ANSWER, keywords="a, b")), "stop", "keywords"),
    (json.dumps(dict(GOOD_ANSWER, keywords=[""])), "stop", "keywords"),
    (json.dumps(GOOD_ANSWER), "length", "cut off"),
])
def test_malformed_answers_are_retryable(content, finish, message):
    with pytest.raises(UpstreamError, match=message):
        parse_answer(content, finish)


# --- enqueue ---------------------------------------------------------------------------------------------------------

def test_enqueue_refuses_a_payload_that_can_never_work(client):
    response = client.post("/jobs", json={"type": "product.optimize", "payload": {"product": {"sku": "A"}}},
                           headers=AUTH)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_payload" and response.json["field"] == "payload"
    assert "text to rewrite" in response.json["message"]
    batch = client.post("/jobs", json={"jobs": [{"type": "product.optimize", "payload": {"product": PRODUCT}},
                                                {"type": "product.optimize", "payload": {"product": PRODUCT,
                                                                                         "lang": "de"}}]},
                        headers=AUTH)
    assert batch.status_code == 422 and batch.json["index"] == 1 and batch.json["error"] == "invalid_payload"
    assert fetch_jobs(client.application.extensions["sqlalchemy"].engine) == []
    ok = client.post("/jobs", json={"type": "product.optimize", "payload": {"product": PRODUCT}}, headers=AUTH)
    assert ok.status_code == 201


# --- running it -------------------------------------------------------------------------------------------------------

def test_a_product_is_optimised_through_the_limiter(make_app, fake, raw_engine):
    client = make_app(fake)
    job_id, = enqueue(client, language="en", instructions="friendly")
    summary = process(client)
    assert summary["succeeded"] == 1, summary
    job, = fetch_jobs(raw_engine)
    assert job["status"] == "completed" and job["attempts"] == 1
    result = job["result"]
    assert set(result["product"]) == {"title", "description", "seo_title", "seo_description", "keywords"}
    assert result["product"]["title"].startswith("Optimised title") and len(result["product"]["keywords"]) == 3
    assert result["language"] == "en" and result["model"] == "gpt-5-mini"
    call, = fake.snapshot()
    assert call.status == 200 and call.job_id == job_id
    assert result["usage"]["total_tokens"] == call.total_tokens
    body, = fake.bodies
    assert body["model"] == "gpt-5-mini" and body["max_completion_tokens"] == 400
    assert body["response_format"]["json_schema"]["strict"] is True
    row = limiter_row(raw_engine)
    assert row["reserved_requests"] == row["settled_requests"] == row["sent_requests"] == 1
    # charged what OpenAI counts for the request as sent, kept; its usage recorded beside it
    assert row["reserved_tokens"] == openai_charge(body) == 400 and row["used_tokens"] == call.total_tokens
    stats = client.get("/rate-limiter/stats", headers=AUTH).json
    assert stats["requests_used"] == 1 and stats["tokens_used"] == call.total_tokens
    assert stats["tokens_charged"] == 400 and stats["tokens_utilisation_pct"] == 0.1
    assert stats["requests_limit"] == 450 and stats["tokens_limit"] == 450_000
    assert stats["requests_in_flight"] == 0 and stats["waiting_jobs"] == 0


def test_stats_need_the_secret(client):
    response = client.get("/rate-limiter/stats")
    assert response.status_code == 401 and response.json["error"] == "unauthorized"
    stats = client.get("/rate-limiter/stats", headers=AUTH).json
    assert stats["requests_used"] == 0 and stats["requests_utilisation_pct"] == 0.0


def test_malformed_and_cut_off_answers_are_retried_with_an_attempt_spent(make_app, fake, raw_engine):
    client = make_app(fake)
    malformed, = enqueue(client, marker="[[fake:malformed]]")
    truncated, = enqueue(client, marker="[[fake:truncate]]")
    summary = process(client)
    assert summary["retried"] == 2 and summary["failed"] == 0
    jobs = {j["id"]: j for j in fetch_jobs(raw_engine)}
    assert jobs[malformed]["status"] == "pending" and jobs[malformed]["attempts"] == 1
    assert "not JSON" in jobs[malformed]["last_error"] and jobs[malformed]["result"] is None
    assert "cut off" in jobs[truncated]["last_error"]
    assert seconds_until_due(raw_engine, malformed) > 3  # the queue's backoff
    row = limiter_row(raw_engine)
    assert row["settled_requests"] == 2 and row["used_tokens"] == sum(c.total_tokens for c in fake.snapshot())


def test_refusals_and_bad_requests_fail_at_once(make_app, fake, raw_engine):
    client = make_app(fake)
    refused, = enqueue(client, marker="[[fake:refuse]]")
    bad, = enqueue(client, marker="[[fake:400]]")
    summary = process(client)
    assert summary["failed"] == 2
    jobs = {j["id"]: j for j in fetch_jobs(raw_engine)}
    assert jobs[refused]["status"] == "failed" and "refused" in jobs[refused]["last_error"]
    assert jobs[bad]["status"] == "failed"
    assert "PermanentError: OpenAI answered 400 (invalid_value): Invalid 'messages[1].content'" in \
        jobs[bad]["last_error"]


def test_a_wrong_key_fails_with_a_clear_error_that_never_shows_the_key(make_app, fake, raw_engine, caplog):
    secret = "sk-wrong-but-secret-0123456789"
    client = make_app(fake, OPENAI_API_KEY=secret)
    enqueue(client)
    with caplog.at_level(logging.DEBUG):
        process(client)
    job, = fetch_jobs(raw_engine)
    assert job["status"] == "failed" and "401 (invalid_api_key)" in job["last_error"]
    assert "check OPENAI_API_KEY" in job["last_error"]
    assert secret not in job["last_error"] and "[redacted]" in job["last_error"]  # the fake echoed it whole
    assert secret not in caplog.text
    assert fake.count(401) == 1  # the SDK's own retries are off


def test_without_a_key_only_product_jobs_fail(make_app, raw_engine):
    client = make_app(None)
    enqueue(client)
    client.post("/jobs", json={"type": "test.echo", "payload": {"a": 1}}, headers=AUTH)
    summary = process(client)
    assert summary["succeeded"] == 1 and summary["failed"] == 1
    optimize, echo = fetch_jobs(raw_engine)
    assert optimize["status"] == "failed" and "OPENAI_API_KEY is not set" in optimize["last_error"]
    assert echo["status"] == "completed"
    assert client.get("/rate-limiter/stats", headers=AUTH).status_code == 200
    assert limiter_row(raw_engine) is None  # no budget was touched


def test_a_429_storm_holds_every_job_back_and_fails_none(make_app, raw_engine):
    with FakeOpenAI() as server:
        client = make_app(server)
        enqueue(client, n=6)
        server.storm_until = time.monotonic() + 2.0  # every request for 2 s: 429, Retry-After: 2
        storm_ends = time.time() + 2.0
        summary = process(client)
        assert summary["failed"] == 0
        # the first 429 holds the others back: the lane waits for the limiter's room (its jobs stay in line,
        # unstarted) or the limiter reschedules them; none calls again before the server said
        assert 1 <= server.count(429) <= 6
        assert all(c.at >= storm_ends - 0.05 for c in server.snapshot() if c.status == 200)
        assert limiter_row(raw_engine)["throttled"] == server.count(429)
        for _ in range(3):  # rescheduled ones come back when the server said, not before
            if summary["succeeded"] == 6 or {j["status"] for j in fetch_jobs(raw_engine)} == {"completed"}:
                break
            pending = fetch_jobs(raw_engine, "status = 'pending'")
            assert all(j["run_at"].timestamp() >= storm_ends - 0.05 for j in pending)
            time.sleep(max(0.0, server.storm_until - time.monotonic()) + 0.6)
            make_due(raw_engine)
            summary = process(client)
        assert {j["status"] for j in fetch_jobs(raw_engine)} == {"completed"}
        assert all(j["attempts"] == 1 for j in fetch_jobs(raw_engine))  # a 429 spends no attempt


def test_server_errors_reschedule_with_a_shared_backoff(make_app, fake, raw_engine):
    client = make_app(fake)
    first, = enqueue(client, marker="[[fake:500]]")
    process(client)
    job, = fetch_jobs(raw_engine)
    assert job["status"] == "pending" and job["attempts"] == 0 and "OpenAI answered 500" in job["last_error"]
    assert 2.0 <= seconds_until_due(raw_engine, first) <= 5.5  # streak 1: 2.5-5 s
    assert fake.count(500) == 1  # the SDK did not retry on its own
    make_due(raw_engine)
    process(client)
    assert 4.5 <= seconds_until_due(raw_engine, first) <= 10.5  # streak 2: 5-10 s
    assert limiter_row(raw_engine)["error_streak"] == 2


def test_an_unreachable_server_is_retried_with_backoff(make_app, raw_engine):
    client = make_app(None, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    job_id, = enqueue(client)
    summary = process(client)
    assert summary["retried"] == 1
    job, = fetch_jobs(raw_engine)
    assert job["status"] == "pending" and job["attempts"] == 1 and "cannot reach OpenAI" in job["last_error"]
    first_delay = seconds_until_due(raw_engine, job_id)
    assert 4 <= first_delay <= 10.5
    make_due(raw_engine)
    process(client)
    assert 9 <= seconds_until_due(raw_engine, job_id) <= 20.5 and fetch_jobs(raw_engine)[0]["attempts"] == 2
    row = limiter_row(raw_engine)
    assert row["settled_requests"] == 2 and row["sent_requests"] == 0  # nothing reached a server: given back


def test_a_call_slower_than_the_deadline_times_out_and_is_retried(make_app, fake, raw_engine):
    client = make_app(fake)
    enqueue(client, marker="[[fake:slow=9]]")
    started = time.monotonic()
    summary = process(client, budget_s=7)
    assert time.monotonic() - started < 8.5  # the fake answers after 9 s; the call gave up before
    assert summary["retried"] == 1 and summary["abandoned"] == 0, summary  # timed out inside the job's deadline
    job, = fetch_jobs(raw_engine)
    assert job["status"] == "pending" and job["attempts"] == 1 and "did not answer within" in job["last_error"]
    row = limiter_row(raw_engine)
    assert row["sent_requests"] == 1 and row["used_tokens"] == row["reserved_tokens"]  # usage unknown: the charge


def test_the_server_is_believed_when_it_says_less_remains(make_app, raw_engine):
    """We are configured for 1200 requests/min; the server allows 120/min with a bucket of 4. Called one job at a
    time, the limiter slows to the server's pace from its x-ratelimit-remaining/-reset headers: no 429."""
    with FakeOpenAI(rpm=120, request_capacity=4) as server:
        client = make_app(server, OPENAI_RPM=1200, JOBS_MAX_IO_CONCURRENCY=1)  # one call at a time
        enqueue(client, n=10)
        started = time.monotonic()
        drain(client, raw_engine)
        assert {j["status"] for j in fetch_jobs(raw_engine)} == {"completed"}
        assert server.count(429) == 0 and server.count(200) == 10
        assert time.monotonic() - started >= (10 - 4) / 2 - 0.5  # the server's pace, not ours
        assert client.get("/rate-limiter/stats", headers=AUTH).json["server_remaining_requests"] == 0


def test_the_same_figures_as_prometheus_metrics(make_app, fake):
    from prometheus_client import CollectorRegistry, generate_latest

    from jobprocessor.ratelimit import prometheus

    client = make_app(fake)
    enqueue(client)
    process(client)

    class Collector:
        def collect(self):
            with client.application.app_context():
                yield from prometheus.collect()

    registry = CollectorRegistry()
    registry.register(Collector())
    text_format = generate_latest(registry).decode()
    stats = client.get("/rate-limiter/stats", headers=AUTH).json
    assert 'jobprocessor_openai_ratelimit_used{unit="requests"} 1.0' in text_format
    assert f'jobprocessor_openai_ratelimit_used{{unit="tokens"}} {float(stats["tokens_used"])}' in text_format
    assert 'jobprocessor_openai_ratelimit_limit{unit="requests"} 450.0' in text_format
    assert "jobprocessor_openai_ratelimit_throttled_total 0.0" in text_format
    assert "jobprocessor_openai_ratelimit_waiting_jobs 0.0" in text_format
