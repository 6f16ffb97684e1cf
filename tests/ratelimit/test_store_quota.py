"""Per-store OpenAI token quotas (openai_tokens_per_minute, ratelimit/store_quota.py) on a real PostgreSQL: a store
over its quota is deferred without spending an attempt, its store/type pair is held so that claims leave its jobs
alone, the other stores' calls go on, and a refusal on either row leaves nothing reserved on the other."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from jobprocessor import create_app
from jobprocessor.handlers import Job, PermanentError, RetryLater
from jobprocessor.queries import claim
from jobprocessor.ratelimit import LimiterStore, SharedLimiter
from jobprocessor.ratelimit.core import Limits, Settlement
from jobprocessor.ratelimit.store_quota import limiter_name
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH
from tests.support.flow_fixtures import set_limit
from tests.support.limiter_fixtures import fake, fresh_limiter, limiter_row, openai_settings  # noqa: F401 - fixtures

SHARED = Limits(rpm=600, tpm=1_000_000)  # the account: never the bottleneck here


def _job(job_id: int, store_id: str | None) -> Job:
    job = Job(id=job_id, type="product.optimize", payload={}, store_id=store_id, user_id=None, priority=5,
              attempts=1, max_attempts=5, batch_id=None)
    job.set_deadline(60.0)
    return job


def _holds(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT store_key, type FROM job_store_quota_holds WHERE until > now()")).all()


def test_a_store_over_its_quota_is_deferred_held_and_alone(clean_db, fresh_limiter):
    engine = fresh_limiter
    set_limit(engine, "s1", openai_tokens_per_minute=600)  # 10 tokens/s: a 300-token call spends 30 s of it
    s1_jobs = insert_jobs(engine, 3, "product.optimize", store_id="'s1'")
    limiter = SharedLimiter(LimiterStore(engine), SHARED)
    first = limiter.acquire(_job(s1_jobs[0], "s1"), 300)
    assert first.store is not None and first.waited_s == 0
    with pytest.raises(RetryLater, match="token quota") as retry:
        limiter.acquire(_job(s1_jobs[1], "s1"), 300)
    assert 30 * 0.9 <= retry.value.seconds <= 30 * 1.25
    assert _holds(engine) == [("s1", "product.optimize")]
    assert limiter_row(engine)["reserved_requests"] == 1  # the refused call took nothing from the shared budget
    other = limiter.acquire(_job(99, "s2"), 300)  # a store without a quota is not held back
    assert other.store is None
    assert limiter_row(engine)["reserved_requests"] == 2
    with pytest.raises(PermanentError, match="openai_tokens_per_minute=600"):  # it could never be sent
        limiter.acquire(_job(s1_jobs[2], "s1"), 601)
    # the held pair's jobs stay where they are; the other stores' jobs are claimed
    insert_jobs(engine, 2, "product.optimize", store_id="'s2'")
    with engine.begin() as conn:
        claimed = claim(conn, limit=10, worker="w1", lease_s=60).jobs
    assert {job["store_id"] for job in claimed} == {"s2"}
    limiter.settle(first, Settlement(sent=True, used_tokens=250))
    assert limiter_row(engine, limiter_name("s1"))["settled_requests"] == 1


def test_a_shared_refusal_gives_the_store_its_tokens_back(clean_db, fresh_limiter):
    engine = fresh_limiter
    set_limit(engine, None, openai_tokens_per_minute=600)  # every store, each on its own
    limiter = SharedLimiter(LimiterStore(engine), Limits(rpm=1, tpm=1_000_000))  # one request a minute
    limiter.acquire(_job(1, "s1"), 10)
    with pytest.raises(RetryLater, match="shared OpenAI budget"):
        limiter.acquire(_job(2, "s2"), 300)
    store_row = limiter_row(engine, limiter_name("s2"))
    assert store_row["settled_requests"] == 1  # reserved, then given back unsent
    with pytest.raises(RetryLater, match="shared OpenAI budget"):  # s2's quota still has its 300 tokens
        limiter.acquire(_job(3, "s2"), 300)
    assert _holds(engine) == []


def test_product_optimize_over_a_store_quota_spends_no_attempt(database_url, clean_db, fresh_limiter, fake):
    app = create_app(openai_settings(database_url, fake))
    app.config["TESTING"] = True
    client = app.test_client()
    try:
        client.put("/limits", json={"store_id": "small", "openai_tokens_per_minute": 1000}, headers=AUTH)
        product = {"title": "Organic cotton T-shirt", "description": "Soft jersey tee.", "sku": "TS-2041"}
        jobs = [{"type": "product.optimize", "store_id": store, "payload": {"product": dict(product, sku=f"{i}")}}
                for i, store in enumerate(["small", "small", "big", "big"])]
        ids = client.post("/jobs", json={"jobs": jobs}, headers=AUTH).json["ids"]
        summary = client.post("/process-pending", json={"budget_s": 20, "limit": 10}, headers=AUTH).json
        assert (summary["succeeded"], summary["retried"]) == (3, 1), summary
        deferred, = fetch_jobs(fresh_limiter, "status = 'pending'")
        assert deferred["id"] in ids[:2] and deferred["attempts"] == 0 and deferred["deferrals"] == 1
        wait = client.get(f"/jobs/{deferred['id']}/wait", headers=AUTH).json
        assert "token_quota" in [reason["code"] for reason in wait["reasons"]], wait
        assert len(fake.snapshot()) == 3
    finally:
        from jobprocessor.extensions import db

        with app.app_context():
            db.engine.dispose()
