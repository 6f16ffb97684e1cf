"""GET /jobs/<id>/wait: every reason code of jobs_wait_reasons() (sql/060), each produced by a real situation -- a
real claim, a real failed run, the real limiter refusing a call, a pause and limits set over HTTP -- never by
writing the tables the reasons read."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from jobprocessor.handlers import Job, RetryLater
from jobprocessor.queries import claim
from jobprocessor.ratelimit import LimiterStore, SharedLimiter
from jobprocessor.ratelimit.core import Limits
from jobprocessor.ratelimit.store_quota import StoreQuotas
from tests.support.db import insert_jobs
from tests.support.settings import AUTH
from tests.support.limiter_fixtures import fresh_limiter  # noqa: F401 - fixture


def reasons(client, job_id: int) -> dict:
    response = client.get(f"/jobs/{job_id}/wait", headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json


def codes(client, job_id: int) -> list[str]:
    return [reason["code"] for reason in reasons(client, job_id)["reasons"]]


def enqueue(client, **job) -> int:
    response = client.post("/jobs", json={"type": "test.echo", **job}, headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json["id"]


def claim_some(engine, limit: int, worker: str = "other-call") -> list:
    with engine.begin() as conn:
        return claim(conn, limit=limit, worker=worker, lease_s=60).jobs


def _job(row_id: int, store_id: str | None) -> Job:
    job = Job(id=row_id, type="test.echo", payload={}, store_id=store_id, user_id=None, priority=5, attempts=1,
              max_attempts=3, batch_id=None)
    job.set_deadline(60.0)
    return job


def test_backoff_not_due_leased_and_finished(client, engine):
    failing = enqueue(client, type="test.fail")
    assert client.post("/process-pending", json={"limit": 10}, headers=AUTH).json["retried"] == 1
    backoff, = reasons(client, failing)["reasons"]
    assert backoff["code"] == "backoff" and "boom" in backoff["message"] and backoff["until"]
    later = enqueue(client, run_at="2999-01-01T00:00:00Z")
    assert codes(client, later) == ["not_due"]
    leased = enqueue(client, store_id="s1")
    claim_some(engine, 10)
    wait = reasons(client, leased)
    assert wait["status"] == "running" and [r["code"] for r in wait["reasons"]] == ["leased"]
    assert wait["reasons"][0]["details"]["locked_by"] == "other-call" and wait["reasons"][0]["until"]
    done = enqueue(client)
    client.post("/process-pending", json={"limit": 10}, headers=AUTH)
    assert reasons(client, done) == {"job_id": done, "status": "completed", "reasons": []}
    assert client.get("/jobs/999999/wait", headers=AUTH).status_code == 404
    assert client.get("/jobs/0/wait", headers=AUTH).status_code == 400


def test_a_workflow_child_waits_for_its_parents(client, engine):
    response = client.post("/jobs", json={"jobs": [{"type": "test.echo"}, {"type": "test.echo"},
                                                   {"type": "test.echo", "depends_on": [{"index": 0}, {"index": 1}]}]},
                           headers=AUTH)
    assert response.status_code == 201, response.json
    first, second, child = response.json["ids"]
    waiting = reasons(client, child)
    assert waiting["status"] == "waiting" and [r["code"] for r in waiting["reasons"]] == ["parents"]
    assert waiting["reasons"][0]["details"] == {"waits_for": 2, "parent_ids": [first, second]}
    with engine.begin() as conn:  # one parent ends: the reason names the other only
        conn.execute(text("UPDATE jobs SET status = 'completed', completed_at = now() WHERE id = :id"), {"id": first})
    assert reasons(client, child)["reasons"][0]["details"] == {"waits_for": 1, "parent_ids": [second]}


def test_no_handler_and_paused(client, engine):
    orphan, = insert_jobs(engine, 1, "gone.type")  # a type whose handler a deploy removed
    assert codes(client, orphan) == ["no_handler"]
    job = enqueue(client, store_id="s1")
    by_store = client.post("/pauses", json={"store_id": "s1"}, headers=AUTH).json
    by_type = client.post("/pauses", json={"type": "test.echo"}, headers=AUTH).json
    paused = reasons(client, job)["reasons"]
    assert [(r["code"], r["details"]["pause_id"]) for r in paused] == [("paused", by_store["id"]),
                                                                        ("paused", by_type["id"])]
    client.delete(f"/pauses/{by_store['id']}", headers=AUTH)
    client.delete(f"/pauses/{by_type['id']}", headers=AUTH)
    assert codes(client, job) == ["waiting_for_turn"]


def test_store_limits(client, engine):
    client.put("/limits", json={"store_id": "busy", "max_running": 1}, headers=AUTH)
    client.put("/limits", json={"store_id": "hasty", "max_starts_per_minute": 1}, headers=AUTH)
    busy = [enqueue(client, store_id="busy") for _ in range(2)]
    hasty = [enqueue(client, store_id="hasty") for _ in range(2)]
    assert {job["id"] for job in claim_some(engine, 10)} == {busy[0], hasty[0]}
    running_limit, = reasons(client, busy[1])["reasons"]
    assert running_limit["code"] == "store_running_limit"
    assert running_limit["details"] == {"running": 1, "max_running": 1, "type": None}
    with engine.begin() as conn:  # the hasty store's job ended: only the starts of the last minute hold it now
        conn.execute(text("UPDATE jobs SET status = 'completed', locked_until = NULL WHERE id = :id"),
                     {"id": hasty[0]})
    rate_limit, = reasons(client, hasty[1])["reasons"]
    assert rate_limit["code"] == "store_rate_limit" and rate_limit["details"]["started"] == 1
    assert rate_limit["until"]  # when the minute's window frees the slot


def test_limiter_hold_and_token_quota(client, engine, fresh_limiter):
    held, quota_held = enqueue(client, store_id="s1"), enqueue(client, store_id="s2")
    limiter = SharedLimiter(LimiterStore(engine), Limits(rpm=1, tpm=1_000_000))  # one request a minute
    limiter.acquire(_job(10**9, None), 10)
    with pytest.raises(RetryLater):
        limiter.acquire(_job(held, "s1"), 10)
    hold, = reasons(client, held)["reasons"]
    assert hold["code"] == "limiter_hold" and hold["until"]
    client.put("/limits", json={"store_id": "s2", "openai_tokens_per_minute": 60}, headers=AUTH)
    quotas = StoreQuotas(engine, rpm=600)
    quotas.reserve("s2", "test.echo", 50, max_wait_s=0)
    assert quotas.reserve("s2", "test.echo", 50, max_wait_s=0)[1] is not None  # refused: the pair is held
    quota, = reasons(client, quota_held)["reasons"]
    assert quota["code"] == "token_quota" and quota["until"]


def test_behind_higher_priority_and_waiting_for_turn(client, engine):
    low = enqueue(client, store_id="c", priority=9)
    urgent = enqueue(client, store_id="a", priority=1)
    behind, turn = reasons(client, low)["reasons"]  # the more urgent jobs first, then its turn at its own level
    assert behind["code"] == "behind_higher_priority" and behind["details"]["jobs_ahead"] == 1
    assert turn["code"] == "waiting_for_turn" and turn["details"]["stores_ahead"] == 0
    assert reasons(client, urgent)["reasons"][0]["details"] == {"stores_ahead": 0, "jobs_ahead_in_store": 0,
                                                                "jobs_per_round": 1}
    client.post("/process-pending", json={"limit": 1}, headers=AUTH)  # the urgent job goes
    [enqueue(client, store_id=store, priority=9) for store in ("a", "b")]
    second_of_a = enqueue(client, store_id="a", priority=9)
    turn, = reasons(client, second_of_a)["reasons"]
    assert turn["code"] == "waiting_for_turn"
    assert turn["details"]["stores_ahead"] >= 1 and turn["details"]["jobs_ahead_in_store"] == 1
    assert codes(client, low) == ["waiting_for_turn"]
    assert reasons(client, low)["reasons"][0]["details"]["stores_ahead"] == 0  # c has waited longest
