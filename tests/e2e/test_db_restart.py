"""PostgreSQL itself stopped and started again in the middle of a call, on a throw-away server of its own (so the
session's shared server is never disturbed): the call answers 503, calls during the outage answer 503, the first
call after the restart works without restarting the app, and every job ends final (the interrupted ones after
their lease), with the audit trail clean."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

import tests.support.fault_handlers  # noqa: F401 - registers the fault.* types in this process
from jobprocessor import devdb
from tests.chaos.setup_db import fresh_database
from tests.support import transitions
from tests.support.db import insert_jobs
from tests.support.faults import drain, fault_server, worker_pids
from tests.support.settings import AUTH

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def own_server():
    pgdata = Path(tempfile.mkdtemp(prefix="jobprocessor-restart-"))
    try:
        devdb.start(pgdata)
        devdb.create_database("jobprocessor_restart", pgdata)
        url = devdb.url("jobprocessor_restart", pgdata)
        engine = fresh_database(url)
        yield pgdata, url, engine
        engine.dispose()
    finally:
        devdb.stop(pgdata, mode="immediate")
        shutil.rmtree(pgdata, ignore_errors=True)


def test_postgres_restarted_during_a_call(own_server):
    pgdata, url, engine = own_server
    insert_jobs(engine, 300, "fault.record_sleep", payload="'{\"seconds\": 0.05}'", max_attempts="5")
    with fault_server(url, workers=1, threads=4, JOBS_LEASE_S=6, JOBS_CONCURRENCY=4) as server:
        workers = worker_pids(server)
        result = {}
        caller = threading.Thread(target=lambda: result.update(
            response=requests.post(server.base + "/process-pending", params={"limit": 300, "budget_s": 20},
                                   headers=AUTH, timeout=60)))
        caller.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM job_executions")).scalar_one() >= 20:
                    break
            time.sleep(0.02)
        engine.dispose()
        devdb.stop(pgdata, mode="fast")  # terminates every session, then shuts down
        try:
            caller.join(30)
            response = result["response"]
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "database_unavailable"

            # during the outage: quick, clear 503s, nothing else
            for path, method in (("/process-pending", requests.post), ("/jobs", requests.get),
                                 ("/healthz", requests.get)):
                started = time.monotonic()
                down = method(server.base + path, headers=AUTH, timeout=30)
                assert down.status_code == 503 and down.json()["error"] == "database_unavailable", path
                assert down.headers.get("Retry-After") and time.monotonic() - started < 6
        finally:
            devdb.start(pgdata)

        # back up: the same worker process serves again without any restart
        first = requests.post(server.base + "/process-pending", params={"limit": 50}, headers=AUTH, timeout=60)
        assert first.status_code == 200, first.text
        assert worker_pids(server) == workers
        summaries = drain(server, engine, deadline_s=60, limit=100, budget_s=10)
    jobs = {row[0]: row[1] for row in engine.connect().execute(text("SELECT status, count(*) FROM jobs GROUP BY 1"))}
    assert jobs == {"completed": 300}
    assert sum(s["rescued"] for s in summaries) + first.json()["rescued"] == transitions.rescues(engine) > 0
    assert transitions.violations(engine) == {}
