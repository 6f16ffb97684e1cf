"""Flow control under real concurrency: 8 OS processes x 8 handler threads, each calling process_pending (the real
pipeline) over and over until the work the checks need is done (a few seconds; a slow machine only takes longer),
against a store with max_running=2, a store with max_starts_per_minute, a store paused once it is being served, and
stores without limits. Measured from each execution's start and end
(job_spans, written by the handler itself). And a SIGKILLed call's slots come back when its leases end."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from jobprocessor import queries
from tests.support.db import insert_jobs
from tests.support.settings import ROOT, SECRET
from tests.support.flow_fixtures import pause, set_limit

MAX_RUN_S = 90.0  # a bound for a broken claim; the run ends when the work below is done
PROCESSES = 8
FREE_JOBS = 200


def max_overlap(spans) -> int:
    """Most executions running at the same moment, from (started_at, ended_at) pairs."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.fixture(scope="module")
def concurrent_run(database_url, raw_engine):
    """The run, once for the module: what each promise is checked against."""
    engine = raw_engine
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_store_arrivals, job_pauses, job_store_limits, "
                          "job_store_starts, job_store_quota_holds, job_spans, job_ticks RESTART IDENTITY"))
    insert_jobs(engine, 30, "test.span", store_id="'limited'", payload="'{\"seconds\": 0.1}'")
    insert_jobs(engine, 40, "test.span", store_id="'rate'", payload="'{\"seconds\": 0.01}'")
    insert_jobs(engine, 600, "test.span", store_id="'paused'", payload="'{\"seconds\": 0.05}'")
    insert_jobs(engine, FREE_JOBS, "test.span", store_id="'free-' || (g % 4)", payload="'{\"seconds\": 0.02}'")
    set_limit(engine, "limited", max_running=2)
    set_limit(engine, "rate", max_starts_per_minute=6)
    # a fork server imports the app's modules once, then forks each process (spawning 8 would import them 8 times)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.support.flow_worker", "tests.support.job_handlers",
                                "jobprocessor.handlers.product_optimize"])
    start, stop, results = ctx.Barrier(PROCESSES + 1), ctx.Event(), ctx.Queue()
    from tests.support.flow_worker import run_until

    procs = [ctx.Process(target=run_until, args=(database_url, SECRET, start, stop, MAX_RUN_S, results))
             for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    start.wait(120)
    deadline = time.monotonic() + MAX_RUN_S

    def count(sql: str) -> int:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def wait_for(sql: str, at_least: int) -> None:
        while count(sql) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)

    wait_for("SELECT count(*) FROM job_spans WHERE store_id = 'paused'", 8)  # the store is being served
    served_before = count("SELECT count(*) FROM jobs WHERE store_id = 'paused' AND status <> 'pending'")
    pause_id = pause(engine, store_id="paused")
    time.sleep(0.5)  # claim statements that started before the pause have committed by now
    with engine.connect() as conn:
        after_pause = set(conn.execute(text("SELECT id FROM jobs WHERE store_id = 'paused' AND status <> 'pending'"))
                          .scalars())
    # what the checks need: every free job done, the limited store served a while, the rate store's allowance
    # claimed and its runs over
    wait_for("SELECT count(*) FROM jobs WHERE store_id LIKE 'free-%' AND status = 'completed'", FREE_JOBS)
    wait_for("SELECT count(*) FROM job_spans WHERE store_id = 'limited' AND ended_at IS NOT NULL", 8)
    wait_for("SELECT coalesce(sum(jobs), 0) FROM job_store_starts WHERE store_key = 'rate'", 6)
    wait_for("SELECT count(*) = 0 FROM jobs WHERE store_id = 'rate' AND status = 'running'", 1)
    stop.set()
    reports = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    with engine.connect() as conn:
        spans = {}
        for row in conn.execute(text("SELECT store_id, started_at, ended_at FROM job_spans")):
            spans.setdefault(row.store_id, []).append((row.started_at, row.ended_at))
        jobs = conn.execute(text("SELECT id, store_id, status FROM jobs")).all()
        rate_claims = conn.execute(text("SELECT coalesce(sum(jobs), 0) FROM job_store_starts "
                                        "WHERE store_key = 'rate'")).scalar()
    yield dict(reports=reports, spans=spans, jobs=jobs, served_before=served_before, after_pause=after_pause,
               pause_id=pause_id, rate_claims=rate_claims)


def test_the_processes_ran_and_overlapped(concurrent_run):
    assert [error for _, error in concurrent_run["reports"]] == [None] * PROCESSES
    assert sum(1 for claimed, _ in concurrent_run["reports"] if claimed) > 1  # the work was shared
    free = [span for store, spans in concurrent_run["spans"].items() if store.startswith("free") for span in spans]
    assert len(free) == FREE_JOBS and max_overlap(free) > 8  # more than one process's threads at once
    assert all(end is not None for spans in concurrent_run["spans"].values() for _, end in spans)


def test_never_more_than_max_running_at_once(concurrent_run):
    spans = concurrent_run["spans"]["limited"]
    assert len(spans) >= 8  # the store was served all along, two at a time (more on a quiet machine)
    assert max_overlap(spans) == 2


def test_starts_per_minute_are_respected(concurrent_run):
    # within the minute: exactly the allowance claimed, no more (a job a call claimed and gave back unstarted at the
    # end of its budget counts too: the platform's allowance is about what was asked, so it is not handed out again)
    assert concurrent_run["rate_claims"] == 6
    runs = concurrent_run["spans"].get("rate", [])
    assert 1 <= len(runs) <= 6
    done = [j for j in concurrent_run["jobs"] if j.store_id == "rate" and j.status != "pending"]
    assert len(done) == len(runs)


def test_a_pause_is_honoured_by_every_caller_from_its_next_round(concurrent_run):
    run = concurrent_run
    assert run["served_before"] > 0
    paused = [j for j in run["jobs"] if j.store_id == "paused"]
    taken = {j.id for j in paused if j.status != "pending"}
    # nothing claimed after the pause had committed (a job claimed before it may have been given back unstarted)
    assert taken <= run["after_pause"]
    assert {j.status for j in paused if j.id in taken} == {"completed"}  # what was running finished
    assert sum(1 for j in paused if j.status == "pending") > 0


KILLED_CALL = """
import sys, time
from sqlalchemy import create_engine
from jobprocessor import queries
from jobprocessor.config import normalise_database_url
engine = create_engine(normalise_database_url(sys.argv[1]))
with engine.begin() as conn:
    rows = queries.claim(conn, limit=10, worker="doomed", lease_s=float(sys.argv[2])).jobs
print(len(rows), flush=True)
time.sleep(600)
"""


def test_a_killed_calls_slots_free_again_when_its_leases_end(database_url, clean_db):
    engine = clean_db
    insert_jobs(engine, 6, "test.sleep", store_id="'s'")
    set_limit(engine, "s", max_running=2)
    lease_s = 2.0
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CALL, database_url, str(lease_s)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "2"  # the store's two slots
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        with engine.begin() as conn:  # its leases live on a moment: the slots are still taken
            assert queries.claim(conn, limit=10, worker="next", lease_s=60).jobs == []
        time.sleep(max(0.0, lease_s + 0.3 - (time.monotonic() - killed_at)))
        # they ended: the slots are free again, whether or not a call has rescued the jobs yet (rescue_limit=0: the
        # ended leases are still `running` in the table; the claim counts live leases only)
        with engine.begin() as conn:
            claim = queries.claim(conn, limit=10, worker="next", lease_s=60, rescue_limit=0)
        assert claim.rescued == 0 and len(claim.jobs) == 2
        with engine.begin() as conn:  # the next call rescues them; the store's two slots are taken meanwhile
            claim = queries.claim(conn, limit=10, worker="next", lease_s=60)
        assert claim.rescued_pending == 2 and claim.jobs == []
    finally:
        if proc.poll() is None:
            proc.kill()
