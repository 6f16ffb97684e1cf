"""The Python enqueue API, and idempotency under concurrent repeats."""
import threading

import pytest
from sqlalchemy import text

from jobprocessor.enqueue import InvalidJob, enqueue, enqueue_many, validate_job
from tests.support.db import fetch_jobs


def test_enqueue_returns_the_id(app, engine):
    job_id = enqueue("test.echo", {"a": 1}, store_id="s", priority="high")
    (job,) = fetch_jobs(engine)
    assert job["id"] == job_id and job["priority"] == 2 and job["payload"] == {"a": 1}


def test_enqueue_inside_the_callers_transaction(app, engine):
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            enqueue("test.echo", {"a": 1}, connection=conn)
            raise RuntimeError("the business write failed")
    assert fetch_jobs(engine) == []  # rolled back with the caller's transaction
    with engine.begin() as conn:
        enqueue("test.echo", {"a": 1}, connection=conn)
    assert len(fetch_jobs(engine)) == 1


def test_enqueue_many_and_unknown_type(app, engine):
    results = enqueue_many([{"type": "test.echo", "payload": {"i": i}} for i in range(3)])
    assert [created for _, created in results] == [True] * 3
    with pytest.raises(InvalidJob) as info:
        enqueue("no.such.type")
    assert info.value.status == 422


def test_naive_run_at_is_utc(settings):
    row = validate_job({"type": "test.echo", "run_at": "2030-05-01T10:00:00"}, settings)
    assert row["run_at"] == "2030-05-01T10:00:00+00:00"


def test_concurrent_repeats_enqueue_one_job(app, engine):
    callers = 16
    barrier = threading.Barrier(callers)
    ids, errors = [], []

    def repeat():
        try:
            barrier.wait()
            with app.app_context(), engine.begin() as conn:  # each caller on its own connection and transaction
                ids.append(enqueue_many([{"type": "test.echo", "idempotency_key": "same"}], connection=conn)[0])
        except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=repeat) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len({job_id for job_id, _ in ids}) == 1
    assert sum(created for _, created in ids) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1
