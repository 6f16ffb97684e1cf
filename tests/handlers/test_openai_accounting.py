"""OpenAI's token accounting, as OpenAI documents it (issue 10): the limiter charges what the server counts, the
output cap follows what answers use, and a cut-off answer is asked again with a larger cap without spending an
attempt. Real PostgreSQL, the real SDK against the fake server (tests/support/fake_openai.py, accounting="openai") over
loopback HTTP; many callers as threads, and as gunicorn worker processes.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter

import pytest
import requests
from sqlalchemy import text

from jobprocessor import create_app
from jobprocessor.handlers import Job, RetryLater
from jobprocessor.handlers.product_optimize import optimize_product
from jobprocessor.policies import output_cap
from tests.support.db import fetch_jobs
from tests.support.fake_openai import FakeOpenAI
from tests.support.gunicorn import Gunicorn
from tests.support.limiter_fixtures import fresh_limiter, limiter_row, openai_settings  # noqa: F401 - fixture
from tests.support.product_calls import process
from tests.support.settings import AUTH

PRODUCT = {"title": "Organic cotton T-shirt", "description": "Soft 180 g/m² jersey tee, pre-shrunk.",
           "sku": "TS-2041", "vendor": "Acme"}


@pytest.fixture
def make_app(database_url, clean_db, fresh_limiter):
    apps = []

    def build(fake: FakeOpenAI, **overrides):
        app = create_app(openai_settings(database_url, fake, **overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    from jobprocessor.extensions import db

    for app in apps:
        with app.app_context():
            db.engine.dispose()


def payload(i: int, marker: str = "", description: str = PRODUCT["description"]) -> dict:
    return {"product": dict(PRODUCT, title=f"{PRODUCT['title']} #{i} {marker}".strip(), description=description),
            "language": "en"}


def enqueue(client, payloads: list[dict]) -> list[int]:
    jobs = [{"type": "product.optimize", "store_id": f"s{i % 3}", "payload": p} for i, p in enumerate(payloads)]
    response = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json["ids"]


def drain(client, engine, budget_s: float = 20) -> None:
    for _ in range(100):
        process(client, budget_s=budget_s)
        if not fetch_jobs(engine, "status = 'pending'"):
            return
    raise AssertionError("jobs still pending")


def call_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "jobprocessor.openai" and '"event": "openai_call"' in r.getMessage()]


def output_row(engine, job_type: str = "product.optimize"):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM openai_output_stats WHERE job_type = :t"),
                            {"t": job_type}).mappings().first()


def retry_caps(engine) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT job_id, cap FROM openai_output_retry_caps")).all())


def charged_rate(calls) -> float:
    """Tokens charged per second by the admitted requests, over the span from the first to the last arrival (the
    last one's charge excluded: it is the start of the next interval)."""
    calls = sorted((c for c in calls if c.status == 200), key=lambda c: c.at)
    span = calls[-1].at - calls[0].at
    return sum(c.charged for c in calls[:-1]) / span


# --- the charge ----------------------------------------------------------------------------------------------------

def test_the_limiter_charges_exactly_what_the_server_counts(make_app, raw_engine, caplog):
    """Per request, the limiter's charge equals the fake's (OpenAI's documented rule, computed by the fake from the
    body it received): with the cap above the input estimate, and with an input larger than the cap."""
    with FakeOpenAI(accounting="openai", completion_tokens=(100, 200), seed=7) as fake:
        client = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=600).test_client()  # the input alone: about 355
        long = "Hand-stitched, naturally dyed linen. Ünïcode and 日本語 too. " * 60  # ~3,600 characters
        enqueue(client, [payload(0), payload(1, description=long), payload(2, "[[fake:need=250]]")])
        with caplog.at_level(logging.INFO, logger="jobprocessor.openai"):
            drain(client, raw_engine)
    served = fake.snapshot()
    assert [c.status for c in served] == [200] * 3
    by_fake = {(c.job_id, c.max_tokens): c.charged for c in served}
    by_limiter = {(line["job_id"], line["max_completion_tokens"]): line["charged_tokens"]
                  for line in call_lines(caplog)}
    assert by_limiter == by_fake
    charges = sorted(by_fake.values())
    assert charges[0] == charges[1] == 600 and charges[2] > 1200  # the cap; the long input's ceil(chars / 4)
    row = limiter_row(raw_engine)
    assert row["reserved_tokens"] == fake.charged() == sum(charges)  # and nothing was given back
    assert sum(row["window_charged"]) == fake.charged()
    assert row["used_tokens"] == sum(c.total_tokens for c in served)  # the usage, recorded beside it


# --- many callers: threads, then gunicorn processes --------------------------------------------------------------

SERVER_TPM, TOLD_TPM = 240_000, 216_000  # the server allows 4,000 tokens/s; the project is told 3,600 (90 %)


def _server(rate_headers: bool = True):
    # a strict server: its token bucket holds 5 s (OpenAI's may hold a minute, which would hide any overshoot); not
    # less, because on a loaded machine requests the limiter spaced out can reach the server a second or two late,
    # bunched. What the limiter counts is checked exactly below (its reserved tokens == the server's charges).
    return FakeOpenAI(accounting="openai", rpm=100_000, tpm=SERVER_TPM, token_capacity=SERVER_TPM / 12,
                      completion_tokens=(150, 300), latency_s=(0.2, 0.6), seed=11, rate_headers=rate_headers)


def run_threads(app, n_threads: int, seconds: float, max_calls: int = 10**9) -> tuple[Counter, list]:
    """`n_threads` handler threads run product jobs back to back, as fast as the limiter lets them, for `seconds`
    (or until `max_calls` jobs are done); a RetryLater is what the queue does with it: run the job again soon."""
    stop_at, errors, done = time.monotonic() + seconds, [], Counter()
    lock = threading.Lock()
    next_id = iter(range(1, 1_000_000))

    def worker() -> None:
        with app.app_context():
            while time.monotonic() < stop_at:
                with lock:
                    job_id = next(next_id)
                if job_id > max_calls:
                    return
                job = Job(id=job_id, type="product.optimize", payload=payload(job_id), store_id="s",
                          user_id=None, priority=5, attempts=1, max_attempts=5, batch_id=None)
                while time.monotonic() < stop_at:
                    job.set_deadline(30)
                    try:
                        optimize_product(job)
                        done["ok"] += 1
                        break
                    except RetryLater as exc:
                        done["retry_later"] += 1
                        time.sleep(min(exc.seconds, 1.0))
                    except Exception as exc:  # noqa: BLE001 - recorded, fails the test
                        errors.append(repr(exc))
                        break

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return done, errors


@pytest.mark.slow
def test_threads_use_the_token_budget_with_no_429(make_app, raw_engine):
    """12 handler threads run product jobs as fast as the limiter lets them for 15 s. The server counts each request
    as OpenAI does (the cap, 1,200 until answers are known, then about 370; or the input, about 355): no 429, and
    the charges reach close to what the project was told. No x-ratelimit-* headers: by the limiter's own count."""
    with _server(rate_headers=False) as fake:
        app = make_app(fake, OPENAI_TPM=TOLD_TPM, OPENAI_RPM=100_000, OPENAI_MAX_OUTPUT_TOKENS=1200)
        done, errors = run_threads(app, 12, 15)
    assert not errors, errors[:3]
    calls = fake.snapshot()
    assert fake.count(429) == 0, Counter(c.limited_by for c in calls if c.status == 429)
    rate = charged_rate(calls)
    assert rate >= 0.85 * TOLD_TPM / 60, (rate, done)
    caps = [c.max_tokens for c in sorted(calls, key=lambda c: c.at)]
    assert caps[0] == 1200 and caps[-1] < 400  # the cap followed the answers
    assert limiter_row(raw_engine)["reserved_tokens"] == fake.charged()
    print(f"\nthreads: {len(calls)} requests, {rate:.0f} tokens/s charged = {rate / (TOLD_TPM / 60):.1%} of the "
          f"told limit, 0 x 429, caps {caps[0]} -> {caps[-1]}, {done}")


def test_short_answers_give_nothing_back_so_the_server_never_refuses(make_app, raw_engine):
    """Answers far shorter than the cap (the cap stays at its bound: fewer answers than MIN_ANSWERS). A limiter
    that gave the unused part back would send several times what the server counts and get 429s at once. The
    server sends no x-ratelimit-* headers here: the limiter's own count must be right."""
    with FakeOpenAI(accounting="openai", rpm=100_000, tpm=600_000, token_capacity=50_000, rate_headers=False,
                    completion_tokens=(20, 40), latency_s=(0.1, 0.3), seed=8) as fake:
        app = make_app(fake, OPENAI_TPM=540_000, OPENAI_RPM=100_000, OPENAI_MAX_OUTPUT_TOKENS=3000)
        done, errors = run_threads(app, 8, 20, max_calls=output_cap.MIN_ANSWERS)
    assert not errors and done["ok"] == output_cap.MIN_ANSWERS, (done, errors[:3])
    calls = fake.snapshot()
    assert fake.count(429) == 0 and {c.max_tokens for c in calls} == {3000}
    assert all(c.total_tokens < c.charged / 4 for c in calls)  # each used a fraction of its charge
    assert limiter_row(raw_engine)["reserved_tokens"] == fake.charged() == 3000 * len(calls)


@pytest.mark.e2e
@pytest.mark.slow
def test_gunicorn_workers_and_cron_callers_use_the_token_budget_with_no_429(database_url, clean_db, fresh_limiter):
    """The same through the whole stack: gunicorn with 3 worker processes, 3 cron callers at once."""
    with _server() as fake, \
            Gunicorn(database_url, workers=3, threads=4,
                     env={"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
                          "OPENAI_RPM": "100000", "OPENAI_TPM": str(TOLD_TPM), "OPENAI_MAX_OUTPUT_TOKENS": "1200",
                          "JOBS_CONCURRENCY": "6"}) as server:
        jobs = [{"type": "product.optimize", "store_id": f"s{i % 4}", "payload": payload(i)} for i in range(400)]
        response = requests.post(server.base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=30)
        assert response.status_code == 201, response.text
        stop_at, errors = time.monotonic() + 20, []

        def cron_caller() -> None:
            session = requests.Session()
            while time.monotonic() < stop_at:
                try:
                    response = session.post(server.base + "/process-pending", json={"limit": 20, "budget_s": 10},
                                            headers=AUTH, timeout=40)
                    if response.status_code != 200:
                        errors.append(response.text)
                except requests.RequestException as exc:
                    errors.append(repr(exc))

        callers = [threading.Thread(target=cron_caller) for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(60)
        stats = requests.get(server.base + "/rate-limiter/stats", headers=AUTH, timeout=10).json()
    assert not errors, errors[:3]
    calls = fake.snapshot()
    assert fake.count(429) == 0, Counter(c.limited_by for c in calls if c.status == 429)
    rate = charged_rate(calls)
    assert rate >= 0.85 * TOLD_TPM / 60, rate
    jobs = fetch_jobs(clean_db, "status <> 'pending'")
    assert jobs and all(j["status"] == "completed" and j["attempts"] == 1 for j in jobs), \
        Counter((j["status"], j["attempts"]) for j in jobs)
    assert limiter_row(clean_db)["reserved_tokens"] == fake.charged()
    # every worker process sends the one shared cap once it is known
    late = [c.max_tokens for c in sorted(calls, key=lambda c: c.at)][-50:]
    cap, = {row["max_completion_tokens"] for row in stats["output_caps"]}
    assert set(late) == {cap} and cap < 400
    print(f"\ngunicorn: {len(calls)} requests, {rate:.0f} tokens/s charged = {rate / (TOLD_TPM / 60):.1%} of the told "
          f"limit, 0 x 429, cap {cap}")


# --- the cap follows the answers --------------------------------------------------------------------------------------

FAST = {"OPENAI_RPM": 100_000, "OPENAI_TPM": 100_000_000}  # the budget is not what these tests are about

def test_the_cap_sent_shrinks_towards_the_answers_and_is_shared(make_app, raw_engine):
    with FakeOpenAI(accounting="openai", completion_tokens=(200, 300), seed=5) as fake:
        client = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=4096, **FAST).test_client()
        enqueue(client, [payload(i) for i in range(output_cap.MIN_ANSWERS + 10)])
        for _ in range(output_cap.MIN_ANSWERS + 10):
            process(client, limit=1)  # one at a time: each call knows every answer before it
        other = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=4096, **FAST).test_client()  # another instance, its own pool
        enqueue(other, [payload(99)])
        process(other)
        stats = other.get("/rate-limiter/stats", headers=AUTH).json
    calls = fake.snapshot()
    caps = [c.max_tokens for c in calls]
    largest = max(c.completion_tokens for c in calls)
    assert caps[:output_cap.MIN_ANSWERS] == [4096] * output_cap.MIN_ANSWERS  # no data yet: the upper bound
    assert all(largest <= cap <= math.ceil(largest * 1.35) for cap in caps[output_cap.MIN_ANSWERS:]), (largest, caps)
    assert caps[-1] == caps[-2]  # the other instance sends the shared cap
    assert all(c.finish_reason == "stop" for c in calls)
    summary, = stats["output_caps"]
    assert summary == {"job_type": "product.optimize", "model": "gpt-5-mini", "max_completion_tokens": caps[-1],
                       "p99_completion_tokens": summary["p99_completion_tokens"],
                       "answers": len(calls), "cut_offs": 0}
    assert largest <= summary["p99_completion_tokens"] < caps[-1]
    assert {j["status"] for j in fetch_jobs(raw_engine)} == {"completed"}


# --- cut-off answers --------------------------------------------------------------------------------------------------

def _warm(client, engine, n: int = output_cap.MIN_ANSWERS) -> int:
    """n answers of 100-150 tokens: the shared cap drops to its floor (256). Returns it."""
    enqueue(client, [payload(1000 + i) for i in range(n)])
    drain(client, engine)
    return output_cap.output_cap(output_cap.OutputStats(tuple(output_row(engine)["weights"]),
                                                        output_row(engine)["answers"]), 4096)


def test_a_cut_off_answer_is_asked_again_with_a_larger_cap_in_the_same_run(make_app, raw_engine):
    with FakeOpenAI(accounting="openai", completion_tokens=(100, 150), seed=3) as fake:
        client = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=4096, **FAST).test_client()
        cap = _warm(client, raw_engine)
        assert cap == output_cap.MIN_CAP
        job_id, = enqueue(client, [payload(1, "[[fake:need=400]]")])
        summary = process(client)
    assert summary["succeeded"] == 1, summary
    job, = fetch_jobs(raw_engine, "id = :id", id=job_id)
    assert job["status"] == "completed" and job["attempts"] == 1  # one run, one attempt
    mine = [c for c in fake.snapshot() if c.job_id == job_id]
    assert [(c.max_tokens, c.finish_reason) for c in mine] == [(256, "length"), (512, "stop")]
    assert job["result"]["usage"]["completion_tokens"] == 400
    row = output_row(raw_engine)
    assert row["cut_offs"] == 1 and row["answers"] == output_cap.MIN_ANSWERS + 2  # the cut-off, then the answer
    # the shared estimate grew past the cut-off (with few answers, one cut-off is more than 1 %)
    grown = output_cap.output_cap(output_cap.OutputStats(tuple(row["weights"]), row["answers"]), 4096)
    assert grown > 400
    assert retry_caps(raw_engine) == {}
    assert limiter_row(raw_engine)["reserved_tokens"] == fake.charged()  # both requests charged, neither given back


def test_a_cut_off_answer_without_time_left_is_rescheduled_and_starts_from_the_larger_cap(make_app, raw_engine):
    with FakeOpenAI(accounting="openai", completion_tokens=(100, 150), seed=4) as fake:
        client = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=4096, **FAST).test_client()
        _warm(client, raw_engine)
        job_id, = enqueue(client, [payload(1, "[[fake:need=400]] [[fake:slow=2]]")])
        summary = process(client, budget_s=7)  # 2 s for the first call leave less than the 5 s a second needs
        assert summary["retried"] == 1 and summary["succeeded"] == 0, summary
        job, = fetch_jobs(raw_engine, "id = :id", id=job_id)
        assert job["status"] == "pending" and job["attempts"] == 0  # no attempt spent
        assert "cut off at 256 output tokens" in job["last_error"] and "asks again with 512" in job["last_error"]
        assert retry_caps(raw_engine) == {job_id: 512}
        with raw_engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET run_at = now() WHERE status = 'pending'"))
        summary = process(client, budget_s=20)
    assert summary["succeeded"] == 1, summary
    job, = fetch_jobs(raw_engine, "id = :id", id=job_id)
    assert job["status"] == "completed" and job["attempts"] == 1
    mine = [c for c in fake.snapshot() if c.job_id == job_id]
    assert [(c.max_tokens, c.finish_reason) for c in mine] == [(256, "length"), (512, "stop")]
    assert retry_caps(raw_engine) == {}


def test_cut_offs_are_bounded_by_the_upper_bound_then_fail_as_before(make_app, raw_engine):
    with FakeOpenAI(accounting="openai", completion_tokens=(100, 150), seed=2) as fake:
        client = make_app(fake, OPENAI_MAX_OUTPUT_TOKENS=1024, **FAST).test_client()
        _warm(client, raw_engine)
        job_id, = enqueue(client, [payload(1, "[[fake:need=100000]]")])
        summary = process(client)
        assert summary["retried"] == 1, summary
        job, = fetch_jobs(raw_engine, "id = :id", id=job_id)
        assert job["status"] == "pending" and job["attempts"] == 1  # the existing failure: an attempt spent
        assert "cut off at OPENAI_MAX_OUTPUT_TOKENS (1024 tokens)" in job["last_error"]
        mine = [c.max_tokens for c in fake.snapshot() if c.job_id == job_id]
        assert mine == [256, 512, 1024]
        assert retry_caps(raw_engine) == {job_id: 1024}  # its next attempt goes straight to the bound
        assert output_row(raw_engine)["cut_offs"] == 3 and output_row(raw_engine)["answers"] == \
            output_cap.MIN_ANSWERS + 1  # only the cut-off at the shared cap counts as an answer
        with raw_engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET run_at = now() WHERE status = 'pending'"))
        process(client)
    assert [c.max_tokens for c in fake.snapshot() if c.job_id == job_id] == [256, 512, 1024, 1024]
