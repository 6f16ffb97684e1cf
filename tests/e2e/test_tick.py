"""Ticks against a real gunicorn on loopback (issue 10): a poison pill that kills its process fails only the runs
that had started; long overlapping ticks leave the API and /healthz fast."""
from __future__ import annotations

import statistics
import threading
import time

import pytest
import requests
from sqlalchemy import text

from tests.support.db import fetch_jobs, insert_jobs
from tests.support.faults import call, drain, fault_server, wait_for_workers, worker_pids
from tests.support.settings import AUTH
from tests.support.transitions import audit_trail, audited  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_a_poison_pill_fails_only_the_runs_that_had_started(database_url, audited):
    engine = audited
    (poison,) = insert_jobs(engine, 1, "fault.exit", priority="1", max_attempts="1")  # kills its process at start
    others = insert_jobs(engine, 50, "fault.record_sleep", payload="'{\"seconds\": 0.2}'", max_attempts="1")
    with fault_server(database_url, workers=1, threads=2, JOBS_LEASE_S=5, JOBS_CONCURRENCY=4) as server:
        (victim,) = worker_pids(server)
        try:
            call(server, timeout=30)  # the worker dies under it
        except requests.RequestException:
            pass
        wait_for_workers(server, 1, exclude=(victim,))
        drain(server, engine, deadline_s=40, budget_s=10)
    with engine.connect() as conn:
        started_by_victim = {row[0] for row in conn.execute(text(
            "SELECT job_id FROM job_transitions WHERE new_locked_by LIKE :p AND old_status = 'running' "
            "AND new_status = 'running' AND attempts = old_attempts + 1"), {"p": f"%:{victim}:%"})}
    failed = {job["id"] for job in fetch_jobs(engine, "status = 'failed'")}
    # the poison pill failed; beside it only jobs whose handlers had started when the process died (at most the
    # other 3 threads' worth); every job it had only claimed ahead ran to completion afterwards
    assert poison in failed and failed <= started_by_victim and len(failed) <= 4
    assert {job["id"] for job in fetch_jobs(engine, "status = 'completed'")} == set(others) - failed
    assert "lease expired" in fetch_jobs(engine, "id = :id", id=poison)[0]["last_error"]


def test_the_api_stays_fast_while_ten_long_ticks_overlap(database_url, clean_db):
    engine = clean_db
    insert_jobs(engine, 400, "test.sleep", payload="'{\"seconds\": 1}'")
    with fault_server(database_url, workers=2, threads=4, JOBS_CONCURRENCY=4) as server:
        stop = threading.Event()
        answers: list[dict] = []

        def tick():
            answers.append(requests.post(server.base + "/process-pending", params={"budget_s": 8}, headers=AUTH,
                                         timeout=30).json())

        ticks = [threading.Thread(target=tick) for _ in range(10)]
        for t in ticks:
            t.start()
        time.sleep(1.0)  # the ticks are running
        health, listing = [], []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for path, into in (("/healthz", health), ("/jobs?limit=5", listing)):
                started = time.monotonic()
                response = requests.get(server.base + path, headers=AUTH, timeout=30)
                into.append(time.monotonic() - started)
                assert response.status_code == 200
            time.sleep(0.02)
        for t in ticks:
            t.join(60)
        stop.set()
    running = [a for a in answers if not a["busy"]]
    busy = [a for a in answers if a["busy"]]
    # at most JOBS_MAX_TICKS_PER_PROCESS (2) calls per worker ran; the others were refused at once
    assert len(answers) == 10 and 1 <= len(running) <= 4 and len(busy) == 10 - len(running)
    assert all(a["claimed"] > 0 for a in running)
    p99 = lambda values: statistics.quantiles(values, n=100)[98]  # noqa: E731
    print(f"/healthz p50 {statistics.median(health) * 1000:.1f} ms p99 {p99(health) * 1000:.1f} ms; "
          f"/jobs p50 {statistics.median(listing) * 1000:.1f} ms p99 {p99(listing) * 1000:.1f} ms")
    # the target is p99 < 100 ms (docs/BENCHMARKS.md measures it); the test bounds it loosely for a busy machine,
    # far below what a tick-starved server shows (13 s before ticks were bounded per process)
    assert p99(health) < 1.0 and p99(listing) < 1.0
    assert statistics.median(health) < 0.1
