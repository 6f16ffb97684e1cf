"""job.step(name, fn): each step's result is stored as it finishes and a later run of the job gets it back without
running fn again -- after an ordinary retry, a budget cut, and a SIGKILL of the process mid-handler (a real process).
Counted: step_runs has one row per run of a step's function (tests/support/workflow_handlers.py)."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from jobprocessor.handlers import Job, handler
from jobprocessor.handler_registry import unregister
from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH, SECRET
from tests.support.workflow_workers import forkserver, ticker


def step_runs(engine, job_id) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT name, count(*) FROM step_runs WHERE job_id = :id GROUP BY name"),
                                 {"id": job_id}).all())


def stored_steps(engine, job_id) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT name, result FROM job_steps WHERE job_id = :id"), {"id": job_id}).all())


def due_now(engine, job_id):
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() WHERE id = :id"), {"id": job_id})


def test_steps_are_stored_and_shown(app, client, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "wf.steps", payload="'{\"text\": \"hallo\"}'")
    process_pending(engine, settings, limit=5, budget_s=10, app=app)
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "completed"
    assert job["result"]["a"]["translated"] == "HALLO" and job["result"]["b"] == ["rewritten", 1]
    assert step_runs(engine, job_id) == {"a": 1, "b": 1}
    detail = client.get(f"/jobs/{job_id}", headers=AUTH).json
    assert [(s["name"], s["result"]) for s in detail["steps"]] == [("a", job["result"]["a"]),
                                                                   ("b", ["rewritten", 1])]
    assert detail["steps_total"] == 2 and detail["parents"] == [] and detail["children"] == []


def test_a_retry_does_not_run_a_finished_step_again(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "wf.steps", payload="'{\"mode\": \"raise\"}'")
    process_pending(engine, settings, limit=5, budget_s=10, app=app)
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "pending" and "upstream hiccup" in job["last_error"]
    assert set(stored_steps(engine, job_id)) == {"a"}  # written when it finished, not at the end of the job
    due_now(engine, job_id)
    process_pending(engine, settings, limit=5, budget_s=10, app=app)
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "completed" and job["attempts"] == 2
    assert step_runs(engine, job_id) == {"a": 1, "b": 2}  # a: paid once


def test_a_budget_cut_does_not_run_a_finished_step_again(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "wf.steps", payload="'{\"mode\": \"cut\"}'")
    process_pending(engine, settings, limit=5, budget_s=1, app=app)
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "pending" and job["deferrals"] == 1 and job["attempts"] == 0  # cut: attempt given back
    process_pending(engine, settings, limit=5, budget_s=10, app=app)
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "completed"
    assert step_runs(engine, job_id) == {"a": 1, "b": 2}


def test_a_sigkill_mid_handler_does_not_run_a_finished_step_again(app, engine, settings, database_url):
    """A real process runs the job; step a finishes (stored), step b hangs; the process is SIGKILLed. The lease runs
    out (forced here instead of waited for), the next call rescues and reruns the job: step a is not paid again."""
    (job_id,) = insert_jobs(engine, 1, "wf.steps", payload="'{\"mode\": \"kill\", \"text\": \"x\"}'")
    proc = forkserver().Process(target=ticker, args=(database_url, SECRET, 30))
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while "b-hang" not in step_runs(engine, job_id):
            assert time.monotonic() < deadline and proc.is_alive(), "the worker never reached step b"
            time.sleep(0.05)
        proc.kill()
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -9
    assert set(stored_steps(engine, job_id)) == {"a"}
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "running" and job["attempts"] == 1
    with engine.begin() as conn:  # its process is gone: the lease would run out within JOBS_LEASE_S
        conn.execute(text("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = :id"), {"id": job_id})
    process_pending(engine, settings, limit=5, budget_s=10, app=app)  # rescues it (pending again, attempt spent)
    process_pending(engine, settings, limit=5, budget_s=10, app=app)  # runs it
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "completed" and job["attempts"] == 2
    assert step_runs(engine, job_id) == {"a": 1, "b": 2, "b-hang": 1}
    assert job["result"]["a"] == stored_steps(engine, job_id)["a"]  # the first run's result, from another process


def test_a_step_result_too_large_or_not_json_fails_the_job(app, engine, settings):
    @handler("wf.big_step", max_attempts=3, timeout_s=10)
    def big_step(job):
        if job.payload.get("json"):
            return job.step("odd", lambda: {"when": object()})
        return job.step("big", lambda: "x" * (settings.JOBS_MAX_STEP_BYTES + 1))

    try:
        big, odd = insert_jobs(engine, 2, "wf.big_step",
                               payload="CASE g WHEN 1 THEN '{}' ELSE '{\"json\": 1}' END::jsonb")
        process_pending(engine, settings, limit=5, budget_s=10, app=app)
        jobs = {j["id"]: j for j in fetch_jobs(engine)}
        assert jobs[big]["status"] == "failed" and "JOBS_MAX_STEP_BYTES" in jobs[big]["last_error"]
        assert jobs[odd]["status"] == "failed" and "cannot be stored as JSON" in jobs[odd]["last_error"]
        assert stored_steps(engine, big) == {} and stored_steps(engine, odd) == {}
    finally:
        unregister("wf.big_step")


def test_step_needs_a_job_run_by_the_processor():
    job = Job(id=1, type="t", payload={}, store_id=None, user_id=None, priority=5, attempts=1, max_attempts=3,
              batch_id=None)
    with pytest.raises(RuntimeError, match="job.step"):
        job.step("a", lambda: 1)
