"""A handler failure leaves a trace an operator can use: one structured log line (job id and type, what became of
the job, the error and where), rate-limited per job type, and the traceback kept on the job, bounded (shown by
GET /jobs/<id>). Results have a size limit (MAX_RESULT_BYTES), and GET /jobs pages one in bytes (MAX_PAGE_BYTES)."""
from __future__ import annotations

import json

import pytest

from jobprocessor import create_app, executor
from jobprocessor.handlers import handler
from jobprocessor.handler_registry import unregister
from jobprocessor.policies.log_rate import LogRate
from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH, make_settings


def failure_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "jobprocessor.jobs" and '"job_failed"' in r.getMessage()]


@pytest.fixture(autouse=True)
def fresh_log_rate(monkeypatch):
    monkeypatch.setattr(executor, "FAILURE_LOG_RATE", LogRate(per_window=10, window_s=60.0))


# --- the rate (pure) ---------------------------------------------------------------------------------------------

def test_log_rate_admits_a_window_s_worth_per_key_and_counts_the_rest():
    rate = LogRate(per_window=3, window_s=10.0)
    assert [rate.admit("a", 0.0) for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert rate.admit("b", 1.0) == (True, 0)  # another type has its own lines
    assert rate.admit("a", 10.5) == (True, 2)  # the next window's first line says what was left out
    assert rate.admit("a", 11.0) == (True, 0)


# --- through a call ------------------------------------------------------------------------------------------------

def test_a_failure_is_logged_with_job_id_and_type_and_its_traceback_kept(app, client, engine, settings, caplog):
    (job_id,) = insert_jobs(engine, 1, job_type="test.fail", store_id="'s9'", payload="'{\"message\": \"no stock\"}'")
    with caplog.at_level("WARNING", logger="jobprocessor.jobs"):
        process_pending(engine, settings, limit=10, budget_s=10)
    (line,) = failure_lines(caplog)
    assert (line["job_id"], line["type"], line["store_id"], line["attempt"], line["outcome"]) == \
        (job_id, "test.fail", "s9", 1, "retry")
    assert line["error"] == "RuntimeError: no stock" and line["exception"] == "RuntimeError"
    assert "tests/support/job_handlers.py" in line["traceback"]
    (job,) = fetch_jobs(engine)
    assert job["last_error"] == "RuntimeError: no stock"
    assert job["last_traceback"].startswith("Traceback (most recent call last):")
    assert "job_handlers.py" in job["last_traceback"] and job["last_traceback"].endswith("RuntimeError: no stock")
    shown = client.get(f"/jobs/{job_id}", headers=AUTH).json
    assert shown["last_traceback"] == job["last_traceback"]
    assert "last_traceback" not in client.get("/jobs", headers=AUTH).json["jobs"][0]  # pages leave it out


def test_final_failures_log_at_error_and_retry_later_is_not_a_failure(app, engine, settings, caplog):
    insert_jobs(engine, 1, job_type="test.permanent")
    insert_jobs(engine, 1, job_type="test.retry_later")
    with caplog.at_level("WARNING", logger="jobprocessor.jobs"):
        process_pending(engine, settings, limit=10, budget_s=10)
    (line,) = failure_lines(caplog)
    assert (line["type"], line["outcome"]) == ("test.permanent", "failed")
    assert [r.levelname for r in caplog.records if '"job_failed"' in r.getMessage()] == ["ERROR"]
    by_type = {job["type"]: job for job in fetch_jobs(engine)}
    assert "PermanentError" in by_type["test.permanent"]["last_traceback"]
    assert by_type["test.retry_later"]["last_traceback"] is None


def test_failure_lines_are_rate_limited_per_type(app, engine, settings, caplog):
    insert_jobs(engine, 25, job_type="test.fail")
    insert_jobs(engine, 2, job_type="test.permanent")
    with caplog.at_level("WARNING", logger="jobprocessor.jobs"):
        process_pending(engine, settings, limit=100, budget_s=20)
    lines = failure_lines(caplog)
    assert sum(line["type"] == "test.fail" for line in lines) == 10
    assert sum(line["type"] == "test.permanent" for line in lines) == 2
    assert all(job["last_traceback"] for job in fetch_jobs(engine))  # every job keeps its own, logged or not


def test_a_long_traceback_is_bounded_and_keeps_its_end(app, engine, settings):
    @handler("test.long_failure", timeout_s=10)
    def long_failure(job):
        raise ValueError("-".join(str(i) for i in range(5000)) + " at the bottom")

    try:
        insert_jobs(engine, 1, job_type="test.long_failure")
        process_pending(engine, settings, limit=10, budget_s=10)
    finally:
        unregister("test.long_failure")
    (job,) = fetch_jobs(engine)
    assert len(job["last_traceback"]) <= executor.MAX_TRACEBACK_CHARS
    assert job["last_traceback"].startswith("Traceback (most recent call last):\n  ... (")
    assert job["last_traceback"].endswith("4998-4999 at the bottom")


def test_a_result_over_max_result_bytes_fails_the_job_clearly(database_url, clean_db):
    app = create_app(make_settings(database_url, MAX_RESULT_BYTES=1000))
    with app.app_context():
        from jobprocessor.extensions import db

        settings = app.extensions["jobprocessor"].settings
        insert_jobs(db.engine, 1, payload="jsonb_build_object('pad', repeat('x', 2000))")
        insert_jobs(db.engine, 1, payload="jsonb_build_object('pad', repeat('x', 500))")
        summary = process_pending(db.engine, settings, limit=10, budget_s=10)
        assert (summary.failed, summary.succeeded) == (1, 1)
        big, small = fetch_jobs(db.engine)
        assert big["status"] == "failed" and big["result"] is None and big["attempts"] == 1
        assert "more than MAX_RESULT_BYTES (1000)" in big["last_error"]
        assert small["status"] == "completed"
        db.engine.dispose()


def test_pages_are_bounded_in_bytes_and_lose_no_job(database_url, clean_db):
    app = create_app(make_settings(database_url, MAX_PAGE_BYTES=64 * 1024))
    client = app.test_client()
    with app.app_context():
        from jobprocessor.extensions import db

        ids = insert_jobs(db.engine, 10, payload="jsonb_build_object('pad', repeat('x', 20000))")
        insert_jobs(db.engine, 5)  # small ones: the page goes on to its limit
        seen, after, sizes = [], None, []
        while True:
            page = client.get("/jobs", query_string={"limit": 50, **({"after": after} if after else {})},
                              headers=AUTH)
            assert page.status_code == 200
            sizes.append(len(page.get_data()))
            seen += [job["id"] for job in page.json["jobs"]]
            after = page.json["next_after"]
            if after is None:
                break
        assert sorted(seen) == sorted(ids + list(range(11, 16))) and len(seen) == len(set(seen))
        # the bound, plus at most the job that crossed it: 5 small + 4 big jobs, then 4 big, then 2
        assert max(sizes) < 64 * 1024 + 20400 + 2000 and len(sizes) == 3, sizes
        db.engine.dispose()


# --- the job a handler receives (job_from_row, job.StartedJob) -----------------------------------------------------

def claimed_row(payload_json: str):
    from jobprocessor.claimed import row_class
    from jobprocessor.queries import CLAIMED_COLUMNS

    values = {"id": 7, "type": "test.echo", "payload": payload_json, "priority": 0, "store_id": "s1",
              "user_id": None, "run_at": None, "attempts": 0, "max_attempts": 3, "batch_id": None, "deferrals": None,
              "deferred_since": None}
    return row_class(CLAIMED_COLUMNS)._make(values[c] for c in CLAIMED_COLUMNS)


def test_a_started_job_is_a_job_whose_payload_is_decoded_when_first_read():
    import dataclasses
    from datetime import datetime, timedelta, timezone

    from jobprocessor.job import Job

    job = executor.job_from_row(claimed_row('{"sku": "A", "n": [1, 2]}'), deadline_s=30.0)
    assert isinstance(job, Job)
    assert (job.id, job.type, job.store_id, job.attempts, job.max_attempts, job.deferrals) == (7, "test.echo", "s1",
                                                                                               1, 3, 0)
    assert job.payload == {"sku": "A", "n": [1, 2]} and job.payload is job.payload  # decoded once
    job.payload["sku"] = "B"
    assert job.payload["sku"] == "B"  # the handler's own changes stay, as on a Job
    job.payload = {"replaced": True}
    assert job.payload == {"replaced": True}
    assert 29.0 < job.time_left() <= 30.0
    assert abs((job.deadline - datetime.now(timezone.utc)) - timedelta(seconds=30)) < timedelta(seconds=1)
    assert job.deadline is job.deadline  # made once
    job.set_deadline(5.0)
    assert 4.0 < job.time_left() <= 5.0 and job.deadline - datetime.now(timezone.utc) < timedelta(seconds=6)
    copy = dataclasses.replace(job, payload={"copied": 1})
    assert copy.payload == {"copied": 1} and copy.id == 7 and copy.deadline == job.deadline
    assert "copied" in repr(copy)


def test_a_job_that_never_reads_its_payload_does_not_decode_it():
    job = executor.job_from_row(claimed_row("{not json"), deadline_s=5.0)  # never a jsonb value: proves laziness
    outcome = executor.execute(job, _spec(lambda j: {"id": j.id}), executor.Run(False, None, 10, 3600.0))
    assert outcome.status == "completed" and outcome.result_json == '{"id":7}'
    with pytest.raises(json.JSONDecodeError):
        job.payload


def _spec(func):
    from jobprocessor.handler_registry import HandlerSpec

    return HandlerSpec(type="test.inline", func=func, max_attempts=3, timeout_s=5.0)
