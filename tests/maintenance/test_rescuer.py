"""The rescuer (jobprocessor/maintenance/rescuer.py) run alone: expired leases come back, bounded by its limit;
`flask jobs rescue`. The claim's inline rescue is tested with the claim (tests/test_queries.py, test_processor.py)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from jobprocessor.maintenance.rescuer import Rescuer, RescuerConfig, RescuerResult
from tests.support.db import fetch_jobs, insert_jobs


def expired(engine, n: int, *, started: bool, attempts: int = 1, max_attempts: int = 3) -> list[int]:
    return insert_jobs(engine, n, "test.echo", status="'running'", locked_by="'dead-call'",
                       locked_until="now() - interval '1 second'", attempts=str(attempts),
                       max_attempts=str(max_attempts), started_at="now() - interval '1 minute'" if started else "NULL")


def test_expired_leases_come_back_and_a_spent_last_attempt_fails(engine):
    leased = expired(engine, 2, started=False, attempts=0)
    halfway = expired(engine, 2, started=True, attempts=1)
    last = expired(engine, 1, started=True, attempts=3)
    live = insert_jobs(engine, 1, "test.echo", status="'running'", locked_by="'live-call'",
                       locked_until="now() + interval '1 minute'", attempts="1", started_at="now()")
    assert Rescuer(engine, RescuerConfig()).run_once() == RescuerResult(pending=4, failed=1)
    jobs = {job["id"]: job for job in fetch_jobs(engine)}
    assert {jobs[i]["status"] for i in leased + halfway} == {"pending"}
    assert all(jobs[i]["locked_by"] is None and jobs[i]["attempts"] == 0 for i in leased)
    assert jobs[last[0]]["status"] == "failed" and "lease expired" in jobs[last[0]]["last_error"]
    assert jobs[live[0]]["status"] == "running" and jobs[live[0]]["locked_by"] == "live-call"


def test_one_pass_rescues_at_most_its_limit(engine, settings):
    expired(engine, 5, started=False, attempts=0)
    rescuer = Rescuer(engine, RescuerConfig(limit=2))
    assert [rescuer.run_once().rescued for _ in range(4)] == [2, 2, 1, 0]
    assert RescuerConfig.from_settings(settings).limit == settings.JOBS_RESCUE_LIMIT
    with pytest.raises(ValueError, match="limit"):
        RescuerConfig(limit=0)


def test_until_done_takes_passes_until_one_finds_fewer_than_its_limit(engine):
    expired(engine, 5, started=False, attempts=0)
    rescuer = Rescuer(engine, RescuerConfig(limit=2))
    assert rescuer.run_until_done(max_passes=1) == RescuerResult(pending=2)
    assert rescuer.run_until_done() == RescuerResult(pending=3)
    assert rescuer.run_until_done() == RescuerResult()


def test_cli_rescue(app, engine):
    expired(engine, 3, started=False, attempts=0)
    ran = app.test_cli_runner().invoke(args=["jobs", "rescue"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output) == {"pending": 3, "failed": 0, "rescued": 3}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending'")).scalar_one() == 3
