"""Faults against a real gunicorn and a real PostgreSQL on loopback: a worker killed with SIGKILL mid-batch, the
app's database connections terminated mid-call, a hung and a thread-leaking handler, handlers whose results or
errors are broken. Every test ends by checking the audit trail (tests/support/transitions.py): no job completed twice,
none changed after it was final, attempts = runs started, none over max_attempts, no lease rescued early, none
stuck in running."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

import tests.support.fault_handlers  # noqa: F401 - registers the fault.* types in this process too
from jobprocessor.processor import GRACE_S
from tests.support import transitions
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.faults import call, drain, fault_server, wait_for_workers, worker_pids
from tests.support.settings import AUTH
from tests.support.transitions import audit_trail, audited  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e













def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


# --- a worker killed in the middle of a batch -------------------------------------------------------------------------

def test_worker_killed_mid_batch_loses_nothing_and_completes_nothing_twice(database_url, audited):
    engine = audited
    ids = insert_jobs(engine, 60, "fault.record_sleep", payload="'{\"seconds\": 0.3}'")
    # lease 6 s: the killed worker's jobs come back 6 s after their claim; a call runs jobs for lease - 2 s
    with fault_server(database_url, workers=2, threads=2, JOBS_LEASE_S=6, JOBS_CONCURRENCY=4) as server:
        doomed_result = {}

        def doomed_call():
            try:
                doomed_result["response"] = call(server, limit=30, budget_s=20)
            except requests.RequestException as exc:
                doomed_result["error"] = exc

        caller = threading.Thread(target=doomed_call)
        caller.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until the call is well into its work, with jobs claimed ahead
            with engine.connect() as conn:
                started = conn.execute(text("SELECT count(*), min(pid) FROM job_executions")).one()
                ahead = conn.execute(text(
                    "SELECT count(*) FROM jobs WHERE status = 'running' AND started_at IS NULL AND locked_by LIKE :p"),
                    {"p": f"%:{started[1]}:%"}).scalar_one()
            if started[0] >= 6 and ahead > 0:
                break
            time.sleep(0.005)
        victim = started[1]
        assert victim in worker_pids(server)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        caller.join(30)
        assert "response" not in doomed_result, "the killed worker cannot have answered"

        wait_for_workers(server, 2, exclude=(victim,))
        with engine.connect() as conn:
            held = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE :p"),
                                {"p": f"%:{victim}:%"}).scalar_one()
        assert held > 0  # the dead worker's claim is still there, under its lease

        summaries = drain(server, engine, deadline_s=40, limit=30, budget_s=20)

    jobs = fetch_jobs(engine)
    assert len(jobs) == 60 and {job["status"] for job in jobs} == {"completed"}
    claims = transitions.claims_by_worker(engine)
    victim_tokens = [token for token in claims if f":{victim}:" in token]
    assert len(victim_tokens) == 1
    assert sum(s["rescued"] for s in summaries) == transitions.rescues(engine) == held
    # the answered calls' counts add up to what the table records for them
    outcomes = transitions.outcomes_by_worker(engine)
    for s in summaries:
        assert claims.get(s["worker"], 0) == s["claimed"]
        assert outcomes.get((s["worker"], "completed"), 0) == s["succeeded"]
    with engine.connect() as conn:
        runs = dict(conn.execute(text("SELECT job_id, count(*) FROM job_executions GROUP BY 1")).all())
        victim_started = {row[0] for row in conn.execute(text(
            "SELECT job_id FROM job_transitions WHERE new_locked_by = :token AND old_status = 'running' "
            "AND new_status = 'running' AND attempts = old_attempts + 1"), {"token": victim_tokens[0]})}
        victim_rescued = {row[0] for row in conn.execute(text(
            "SELECT job_id FROM job_transitions WHERE rescue AND old_locked_by = :token"),
            {"token": victim_tokens[0]})}
    assert set(runs) == set(ids)  # every job ran
    # the killed call stranded only what it was running (4 threads, and outcomes not yet written: at most a
    # quarter second's) or about to run (the prefetch of 0.3 s jobs on 4 threads: 0.5 s of work, 7 jobs), and only
    # the jobs whose handlers it had started lost an attempt; the ones it had only leased came back as they were
    killed_runs = victim_started & victim_rescued
    assert killed_runs and len(victim_rescued) == held <= 4 + 5 + 7
    assert victim_rescued - victim_started  # some were only leased: they must not have lost an attempt
    for job in jobs:
        assert job["attempts"] == (2 if job["id"] in killed_runs else 1)
        assert runs[job["id"]] <= job["attempts"]
    # back within about a lease (plus a worker's restart and the drain's calls, which take seconds on a loaded CI)
    assert time.monotonic() - killed_at < 6 + 25


# --- the database's connections terminated --------------------------------------------------------------------------

def _terminate_app_backends(engine, where: str = "true") -> int:
    with engine.connect() as conn:
        return len(conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'jobprocessor' "
            f"AND datname = current_database() AND pid <> pg_backend_pid() AND {where}")).all())


def test_terminated_idle_connections_are_replaced_before_use(database_url, audited):
    engine = audited
    with fault_server(database_url, workers=1, threads=2) as server:
        insert_jobs(engine, 5, "test.echo")
        assert call(server).status_code == 200
        assert _terminate_app_backends(engine) >= 1  # every pooled connection of the app is now dead
        insert_jobs(engine, 5, "test.echo")
        response = call(server)  # pool_pre_ping notices and reconnects: no 503, no restart
        assert response.status_code == 200 and response.json()["succeeded"] == 5
        assert requests.get(server.base + "/healthz", timeout=5).status_code == 200


def test_connection_killed_while_recording_outcomes_is_503_then_rescued(database_url, audited):
    engine = audited
    insert_jobs(engine, 100, "fault.record_sleep", payload="'{\"seconds\": 0.3}'")
    with fault_server(database_url, workers=1, threads=2, JOBS_LEASE_S=8, JOBS_CONCURRENCY=2) as server:
        result = {}
        caller = threading.Thread(target=lambda: result.update(response=call(server, limit=100, budget_s=20)))
        locker = engine.connect()
        try:
            caller.start()
            deadline = time.monotonic() + 5
            running = []
            while time.monotonic() < deadline and not running:
                running = fetch_jobs(engine, "status = 'running' AND started_at IS NOT NULL")
                time.sleep(0.01)
            assert running
            # hold a running job's row: the call's outcome UPDATE will wait on it, and we kill it while it waits
            tx = locker.begin()
            locker.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": running[0]["id"]})
            terminated = 0
            deadline = time.monotonic() + 10
            while caller.is_alive() and time.monotonic() < deadline:
                terminated += _terminate_app_backends(engine, "wait_event_type = 'Lock'")
                time.sleep(0.05)
            tx.rollback()
        finally:
            locker.close()
        caller.join(10)
        answered_at = time.time()
        response = result["response"]
        assert terminated >= 2  # the first write and its retry were both killed
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable" and response.json()["message"]
        assert response.headers["Retry-After"]

        # the failed call starts no further jobs once it has given up
        time.sleep(0.6)
        with engine.connect() as conn:
            late_starts = conn.execute(text(
                "SELECT count(*) FROM job_executions WHERE at > to_timestamp(:t) + interval '0.3 seconds'"),
                {"t": answered_at}).scalar_one()
        assert late_starts == 0

        # the app needs no restart: the next call works at once; after the lease every job is rescued and done
        next_call = call(server)
        assert next_call.status_code == 200
        summaries = [next_call.json()] + drain(server, engine, deadline_s=40, limit=100, budget_s=10)
    assert sum(s["rescued"] for s in summaries) == transitions.rescues(engine) >= 1
    jobs = fetch_jobs(engine)
    assert {job["status"] for job in jobs} == {"completed"} and len(jobs) == 100


def test_calls_during_a_connection_kill_storm_answer_200_or_503(database_url, audited):
    engine = audited
    insert_jobs(engine, 300, "fault.record_sleep", payload="'{\"seconds\": 0.02}'", max_attempts="5")
    statuses, bodies = [], []
    with fault_server(database_url, workers=2, threads=4, JOBS_LEASE_S=5, JOBS_CONCURRENCY=4) as server:
        stop = threading.Event()

        def caller():
            while not stop.is_set():
                response = call(server, limit=20, budget_s=5)
                statuses.append(response.status_code)
                bodies.append(response.json())

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for thread in callers:
            thread.start()
        killed = 0
        storm_end = time.monotonic() + 3
        while time.monotonic() < storm_end:
            killed += _terminate_app_backends(engine)
            time.sleep(0.1)
        stop.set()
        for thread in callers:
            thread.join(30)
        assert killed > 0
        assert set(statuses) <= {200, 503}, statuses
        for status, body in zip(statuses, bodies):
            if status == 503:
                assert body["error"] == "database_unavailable" and body["message"]
        # no restart: calls work straight away, and every job ends final
        assert call(server).status_code == 200
        drain(server, engine, deadline_s=60, limit=50, budget_s=10)
    failed = fetch_jobs(engine, "status = 'failed'")
    for job in failed:  # a handler whose own connection was killed fails like any error, within max_attempts
        assert job["attempts"] == job["max_attempts"] or "lease expired" in job["last_error"]
    assert len(fetch_jobs(engine, "status = 'completed'")) + len(failed) == 300


# --- hung and thread-leaking handlers -------------------------------------------------------------------------------

def test_hung_handler_answers_in_time_is_rescued_and_the_worker_stays_healthy(database_url, audited):
    engine = audited
    (hung,) = insert_jobs(engine, 1, "fault.hang", max_attempts="2", priority="1")  # timeout_s=1, never returns
    (slow,) = insert_jobs(engine, 1, "fault.slow_ok", payload="'{\"seconds\": 1.6}'")  # timeout_s=5
    (leaky,) = insert_jobs(engine, 1, "fault.leak_thread")
    insert_jobs(engine, 10, "test.echo")
    # lease 5 s, renewed while the hung handler's thread lives, up to 3 s past its deadline (JOBS_STUCK_HANDLER_S);
    # the hung job is abandoned by its call at its own 1 s timeout + grace
    with fault_server(database_url, workers=1, threads=4, JOBS_LEASE_S=5, JOBS_CONCURRENCY=4,
                      JOBS_STUCK_HANDLER_S=3, GUNICORN_GRACEFUL_TIMEOUT=2) as server:
        (worker,) = worker_pids(server)
        threads_before = thread_count(worker)
        started = time.monotonic()
        first = call(server, limit=20, budget_s=60)
        elapsed = time.monotonic() - started
        body = first.json()
        assert first.status_code == 200
        assert elapsed < 1 + GRACE_S + 4  # the hung handler's timeout + grace (+ a busy machine), not the 60 s budget
        assert (body["succeeded"], body["abandoned"]) == (12, 1)  # slow_ok outlived hang's 1 s: not abandoned
        assert fetch_jobs(engine, "id = :id", id=slow)[0]["status"] == "completed"
        assert fetch_jobs(engine, "id = :id", id=leaky)[0]["status"] == "completed"
        assert fetch_jobs(engine, "id = :id", id=hung)[0]["status"] == "running"

        # the worker serves other calls meanwhile, fast
        insert_jobs(engine, 5, "test.echo")
        quick = call(server)
        assert quick.status_code == 200 and quick.json()["succeeded"] == 5

        # past the lease it was claimed with, the hung job is still held (its thread lives): no second copy starts
        time.sleep(max(0.0, started + 6.5 - time.monotonic()))
        assert call(server, limit=5).json()["claimed"] == 0
        job = fetch_jobs(engine, "id = :id", id=hung)[0]
        assert (job["status"], job["attempts"], job["locked_by"]) == ("running", 1, body["worker"])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT locked_until > now() FROM jobs WHERE id = :id"), {"id": hung}).scalar()

        # 3 s past its deadline its lease is no longer renewed: it runs out, the job is rescued and tried again;
        # after its 2nd attempt also hangs, it fails
        summaries = drain(server, engine, deadline_s=40, limit=5, budget_s=60)
        assert sum(s["rescued"] for s in summaries) == 2
        job = fetch_jobs(engine, "id = :id", id=hung)[0]
        assert (job["status"], job["attempts"]) == ("failed", 2)
        assert job["last_error"].startswith("lease expired:") and "did not finish within its lease" in \
            job["last_error"]
        assert all(s["duration_ms"] < (1 + GRACE_S + 4) * 1000 for s in summaries)

        # same worker process, still healthy; it carries the two abandoned threads and the leaked one
        assert worker_pids(server) == [worker]
        assert requests.get(server.base + "/healthz", timeout=5).status_code == 200
        leaked = thread_count(worker) - threads_before
        assert 3 <= leaked <= 3 + 8  # abandoned + leaked threads, plus at most a call's idle worker threads
        stopped_at = time.monotonic()
    # a leaked non-daemon thread cannot hold the worker past the graceful timeout (2 s here)
    while Path(f"/proc/{worker}").exists() and time.monotonic() - stopped_at < 10:
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists()
    assert time.monotonic() - stopped_at < 2 + 5


# --- handlers whose results or errors are broken ---------------------------------------------------------------------

BROKEN = {
    "fault.nan_result": "the handler's result is not JSON-serialisable: ValueError: Out of range float",
    "fault.circular_result": "the handler's result is not JSON-serialisable: ValueError: Circular reference",
    "fault.deep_result": "the handler's result is not JSON-serialisable: RecursionError",
    "fault.surrogate_result": "the handler's result is not JSON-serialisable: ValueError: it contains a lone "
                              "surrogate",
    "test.unserialisable": "the handler's result is not JSON-serialisable: TypeError: Object of type object",
    "fault.surrogate_error": "attempts exhausted (1/1); last error: RuntimeError: upstream said \\udcff\\udcfe",
    "fault.raise_in_except": "attempts exhausted (1/1); last error: AttributeError: 'NoneType' object has no "
                             "attribute 'close' (while handling ValueError: the first problem)",
    "fault.raise_in_finally": "attempts exhausted (1/1); last error: KeyError: 'raised in finally'",
    "fault.str_not_str": "attempts exhausted (1/1); last error: Weird: <error message could not be rendered>",
    "test.broken_error": "attempts exhausted (1/1); last error: Unprintable: <error message could not be "
                         "rendered>",
    "fault.system_exit": "attempts exhausted (1/1); last error: SystemExit: 3",
    "fault.huge_error": "attempts exhausted (1/1); last error: RuntimeError: xxxxxxxx",
}


def test_broken_results_and_errors_fail_their_job_and_spare_the_batch(database_url, audited):
    engine = audited
    with fault_server(database_url, workers=1, threads=2, JOBS_CONCURRENCY=4) as server:
        jobs = [{"type": job_type, "max_attempts": 1} for job_type in BROKEN] + \
               [{"type": "test.echo", "payload": {"i": i}} for i in range(20)]
        created = requests.post(server.base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=10)
        assert created.status_code == 201
        response = call(server, limit=100)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["claimed"], body["succeeded"], body["failed"], body["retried"]) == (32, 20, 12, 0)
        by_id = {job["id"]: job for job in fetch_jobs(engine)}
        for job_id, sent in zip(created.json()["ids"], jobs):
            job = by_id[job_id]
            if sent["type"] == "test.echo":
                assert job["status"] == "completed" and job["result"]["payload"] == sent["payload"]
                continue
            assert job["status"] == "failed", sent["type"]
            assert job["last_error"].startswith(BROKEN[sent["type"]]), (sent["type"], job["last_error"])
            assert len(job["last_error"]) <= 2000
        # the worker is fine afterwards
        insert_jobs(engine, 3, "test.echo")
        assert call(server).json()["succeeded"] == 3
