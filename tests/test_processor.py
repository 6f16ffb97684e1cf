"""process_pending against a real PostgreSQL: outcomes, order, schedule, budget, hangs, leases, concurrency."""
import dataclasses
import multiprocessing
import threading
import time

import pytest
from sqlalchemy import text

from jobprocessor import queries
from jobprocessor.leases import keeper_for
from jobprocessor.processor import GRACE_S, process_pending
from tests.support.calls import one, run
from tests.support.db import drain_until_idle, fetch_jobs, insert_jobs
from tests.support.job_handlers import HANG_FOREVER
from tests.support.settings import SECRET


def seconds_until(engine, job_id) -> float:
    with engine.connect() as conn:
        return conn.execute(text("SELECT extract(epoch FROM run_at - now()) FROM jobs WHERE id = :id"),
                            {"id": job_id}).scalar_one()


# --- outcomes ------------------------------------------------------------------------------------------------------

def test_success_stores_result_and_finishes_the_job(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.echo", payload="'{\"sku\": \"A-1\"}'", store_id="'s1'")
    summary = run(app, engine, settings, limit=10)
    assert (summary.claimed, summary.succeeded, summary.stores) == (1, 1, {"s1": 1})
    job = one(engine, job_id)
    assert job["status"] == "completed" and job["attempts"] == 1
    assert job["result"] == {"payload": {"sku": "A-1"}, "store_id": "s1", "attempts": 1}
    assert job["completed_at"] >= job["started_at"] and job["locked_by"] is None and job["locked_until"] is None


def test_exception_retries_with_backoff_and_records_the_error(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.fail", max_attempts="3")
    summary = run(app, engine, settings, limit=10)
    assert summary.retried == 1
    job = one(engine, job_id)
    assert job["status"] == "pending" and job["attempts"] == 1
    assert job["last_error"] == "RuntimeError: boom"
    assert 4 <= seconds_until(engine, job_id) <= 10  # first retry waits 5-10 s
    assert run(app, engine, settings, limit=10).claimed == 0  # not due again yet: no hot retry loop


def test_backoff_grows_with_attempts(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.fail", max_attempts="5", attempts="3")
    run(app, engine, settings, limit=10)  # the 4th attempt fails: 40-80 s
    assert 39 <= seconds_until(engine, job_id) <= 80


def test_attempts_exhausted_is_final(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.fail", max_attempts="2", attempts="1")
    summary = run(app, engine, settings, limit=10)
    assert summary.failed == 1
    job = one(engine, job_id)
    assert job["status"] == "failed" and job["attempts"] == 2 and job["completed_at"] is not None
    assert job["last_error"].startswith("attempts exhausted (2/2)") and "boom" in job["last_error"]


def test_retry_later_does_not_spend_an_attempt(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.retry_later", payload="'{\"seconds\": 120}'")
    summary = run(app, engine, settings, limit=10)
    assert summary.retried == 1
    job = one(engine, job_id)
    assert job["status"] == "pending" and job["attempts"] == 0
    assert 115 <= seconds_until(engine, job_id) <= 121
    assert "busy upstream" in job["last_error"]


def test_permanent_error_fails_now(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.permanent", max_attempts="5")
    assert run(app, engine, settings, limit=10).failed == 1
    job = one(engine, job_id)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["last_error"] == "PermanentError: the product does not exist"


def test_unserialisable_result_fails_with_a_clear_error_and_spares_the_batch(app, engine, settings):
    bad = insert_jobs(engine, 1, "test.unserialisable")
    good = insert_jobs(engine, 3, "test.echo")
    summary = run(app, engine, settings, limit=10)
    assert (summary.succeeded, summary.failed) == (3, 1)
    assert one(engine, bad[0])["last_error"].startswith("the handler's result is not JSON-serialisable")
    assert all(one(engine, i)["status"] == "completed" for i in good)


def test_exception_whose_message_cannot_render_still_records_an_error(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.broken_error")
    assert run(app, engine, settings, limit=10).retried == 1
    assert one(engine, job_id)["last_error"] == "Unprintable: <error message could not be rendered>"


def test_a_process_never_claims_a_type_it_has_no_handler_for(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "nobody.handles.this", run_at="now() - interval '1 minute'")
    others = insert_jobs(engine, 3, "test.echo")
    before = one(engine, job_id)
    summary = run(app, engine, settings, limit=10)
    assert (summary.claimed, summary.succeeded, summary.released) == (3, 3, 0)
    job = one(engine, job_id)  # waits, untouched, for a process that has its handler
    assert job["status"] == "pending" and job["attempts"] == 0 and job["run_at"] == before["run_at"]
    assert job["locked_by"] is None and job["last_error"] is None
    assert all(one(engine, i)["status"] == "completed" for i in others)


def test_a_handlers_own_session_never_outlives_its_job(app, engine, settings):
    """A handler's Flask-SQLAlchemy session is removed after its job: the next job on the same thread (one thread,
    one run of jobs or several) starts without it."""
    insert_jobs(engine, 6, "test.session")
    summary = run(app, engine, settings, limit=6, JOBS_CONCURRENCY=1)
    assert summary.succeeded == 6
    results = [job["result"] for job in fetch_jobs(engine)]
    assert results == [{"left_by": None}] * 6


# --- order and schedule --------------------------------------------------------------------------------------------

def test_priority_then_age_then_id(app, engine, settings):
    # (priority, seconds ago): the claim must take urgent first, then oldest within a priority
    specs = [(10, 500), (5, 100), (1, 10), (5, 300), (2, 50), (1, 20), (10, 1000)]
    ids = []
    for priority, ago in specs:
        ids += insert_jobs(engine, 1, "test.record", priority=str(priority),
                           run_at=f"now() - interval '{ago} seconds'")
    summary = run(app, engine, settings, limit=4, JOBS_CONCURRENCY=1)
    assert summary.claimed == 4
    with engine.connect() as conn:
        executed = [r[0] for r in conn.execute(text("SELECT job_id FROM job_executions ORDER BY at"))]
    # urgent(20s ago), urgent(10s ago), high, normal(300s ago)
    assert executed == [ids[5], ids[2], ids[4], ids[3]]


def test_scheduled_jobs_do_not_run_early(app, engine, settings):
    (later,) = insert_jobs(engine, 1, "test.echo", run_at="now() + interval '1 hour'", priority="1")
    (now_job,) = insert_jobs(engine, 1, "test.echo", priority="10")
    summary = run(app, engine, settings, limit=10)
    assert summary.claimed == 1 and one(engine, now_job)["status"] == "completed"
    assert one(engine, later)["status"] == "pending"
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = :id"), {"id": later})
    assert run(app, engine, settings, limit=10).claimed == 1 and one(engine, later)["status"] == "completed"


def test_type_filter_claims_only_that_type(app, engine, settings):
    insert_jobs(engine, 3, "test.echo")
    insert_jobs(engine, 2, "test.record")
    summary = process_pending(engine, settings, limit=10, budget_s=10, job_type="test.record", app=app)
    assert summary.claimed == 2
    assert {j["type"] for j in fetch_jobs(engine, "status = 'pending'")} == {"test.echo"}


# --- budget, hangs, leases -----------------------------------------------------------------------------------------

def test_jobs_that_cannot_finish_inside_the_budget_are_released_unspent(app, engine, settings):
    # one thread; each job sleeps 0.9 s and declares timeout_s=1: the 1st starts at 0 s, the 2nd at 0.9 s; the 3rd
    # would start at 1.8 s and could run until 2.8 s, past the 2.5 s budget, so it and the rest are released.
    ids = insert_jobs(engine, 6, "test.quick_sleep", payload="'{\"seconds\": 0.9}'",
                      run_at="now() - interval '1 minute'")
    run_at_before = {j["id"]: j["run_at"] for j in fetch_jobs(engine)}
    started = time.monotonic()
    summary = run(app, engine, settings, limit=10, budget_s=2.5, JOBS_CONCURRENCY=1)
    elapsed = time.monotonic() - started
    # two start; claimed ahead of the thread, the others are given back once they no longer fit
    assert summary.succeeded == 2 and summary.released == summary.claimed - 2 >= 1
    assert elapsed < 2.5 + GRACE_S
    released = fetch_jobs(engine, "status = 'pending'")
    assert [j["id"] for j in released] == ids[2:]
    for job in released:  # attempt given back, place in line kept, lease dropped
        assert job["attempts"] == 0 and job["run_at"] == run_at_before[job["id"]]
        assert job["locked_by"] is None and job["started_at"] is None


def test_slow_handlers_answer_inside_budget_plus_grace(app, engine, settings):
    insert_jobs(engine, 8, "test.sleep", payload="'{\"seconds\": 1.2}'")
    started = time.monotonic()
    summary = run(app, engine, settings, limit=10, budget_s=3, JOBS_CONCURRENCY=2)
    assert time.monotonic() - started < 3 + GRACE_S
    assert summary.succeeded + summary.released + summary.abandoned == summary.claimed
    assert summary.succeeded >= 2 and summary.released >= 1
    assert not fetch_jobs(engine, "status = 'running' AND locked_until IS NULL")


def test_hung_handler_is_abandoned_then_recorded_late(app, engine, settings):
    (hung,) = insert_jobs(engine, 1, "test.hang", priority="1")  # timeout_s=1
    others = insert_jobs(engine, 20, "test.echo")
    HANG_FOREVER.clear()
    try:
        started = time.monotonic()
        summary = run(app, engine, settings, limit=21, budget_s=30, JOBS_CONCURRENCY=2)
        elapsed = time.monotonic() - started
        # the call stops waiting at the hung job's deadline + grace, not at the 30 s budget
        assert elapsed < 1 + GRACE_S + 1.5
        assert (summary.succeeded, summary.abandoned) == (20, 1)
        assert all(one(engine, i)["status"] == "completed" for i in others)
        job = one(engine, hung)
        assert job["status"] == "running" and job["locked_until"] is not None  # held by its lease, not lost
        # ... renewed while its thread lives, up to JOBS_STUCK_HANDLER_S past its deadline, not only until the
        # call's own hold of its jobs ends (the call's budget + grace)
        held_until = keeper_for(engine, settings.JOBS_LEASE_S).held_until(hung)
        assert held_until is not None and held_until > started + 1 + settings.JOBS_STUCK_HANDLER_S - 5
    finally:
        HANG_FOREVER.set()  # the handler returns; its own thread records the outcome
    for _ in range(50):
        if one(engine, hung)["status"] == "completed":
            break
        time.sleep(0.1)
    assert one(engine, hung)["status"] == "completed"
    HANG_FOREVER.clear()


def _quick_run_then_a_hang(app, engine, settings) -> tuple[list[int], int]:
    """Five test.echo jobs and then a test.hang (timeout 1 s), both types measured quick, after a call that leaves
    the process a quick pace: the next call claims all six in its first round and its one thread takes them as one
    run, so the echoes' outcomes are kept by the run while the hang's handler blocks."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) VALUES "
                          "('test.echo', ARRAY[0.002, 0.002, 0.002]::real[], 3), "
                          "('test.hang', ARRAY[0.002, 0.002, 0.002]::real[], 3)"))
    insert_jobs(engine, 1, "test.echo")
    assert run(app, engine, settings, JOBS_CONCURRENCY=1).succeeded == 1
    echoes = insert_jobs(engine, 5, "test.echo", run_at="now() - interval '1 minute'")
    (hung,) = insert_jobs(engine, 1, "test.hang")
    return echoes, hung


def _wait_for_the_hung_job(engine, hung) -> None:
    HANG_FOREVER.set()  # the handler returns; its own thread records the outcome
    for _ in range(50):
        if one(engine, hung)["status"] == "completed":
            break
        time.sleep(0.1)
    HANG_FOREVER.clear()


def test_outcomes_a_run_keeps_are_written_within_the_flush_interval_while_its_next_handler_hangs(app, engine,
                                                                                                 settings):
    # A handler that hangs in a run of quick jobs must not hold back the outcomes of the run's jobs before it until
    # it is abandoned (deadline + GRACE_S, 3 s here): they are written within FLUSH_EVERY_S (a killed call loses no
    # more than that), whoever keeps them meanwhile (the run itself, until its coordinator takes them for a flush).
    echoes, hung = _quick_run_then_a_hang(app, engine, settings)
    HANG_FOREVER.clear()
    result = {}
    started = time.monotonic()
    caller = threading.Thread(target=lambda: result.update(summary=run(app, engine, settings, limit=6, budget_s=20,
                                                                       JOBS_CONCURRENCY=1)))
    caller.start()
    try:
        written_after = None
        while time.monotonic() - started < 1 + GRACE_S + 2:
            if all(one(engine, i)["status"] == "completed" for i in echoes):
                written_after = time.monotonic() - started
                break
            time.sleep(0.02)
        assert written_after is not None and written_after < 1 + GRACE_S / 2, written_after
        assert one(engine, hung)["status"] == "running"  # still in its handler, in the same run
        caller.join(10)
        summary = result["summary"]
        assert (summary.rounds, summary.succeeded, summary.abandoned) == (1, 5, 1)
    finally:
        _wait_for_the_hung_job(engine, hung)
        caller.join(10)


def test_a_run_whose_handler_is_abandoned_leaves_its_earlier_outcomes_to_the_call(app, engine, settings,
                                                                                   monkeypatch):
    # No flush falls due before the hung handler is abandoned (FLUSH_EVERY_S longer than the call): the outcomes of
    # the run's earlier jobs are written by the call (its coordinator takes what the run kept when it abandons the
    # run's job), not lost with a thread that may never return.
    from jobprocessor import processor

    monkeypatch.setattr(processor, "FLUSH_EVERY_S", 60.0)
    echoes, hung = _quick_run_then_a_hang(app, engine, settings)
    HANG_FOREVER.clear()
    try:
        summary = run(app, engine, settings, limit=6, budget_s=20, JOBS_CONCURRENCY=1)
        assert (summary.rounds, summary.succeeded, summary.abandoned) == (1, 5, 1)
        assert [one(engine, i)["status"] for i in echoes] == ["completed"] * 5
        assert one(engine, hung)["status"] == "running"
    finally:
        _wait_for_the_hung_job(engine, hung)
    assert one(engine, hung)["status"] == "completed"


def test_a_runs_successes_move_the_lane_mean_as_they_would_one_by_one(app, engine, settings):
    # A run hands its jobs' figures to the call once, at its end: the lane's mean run time (an EWMA per success,
    # what rounds are sized by) comes out as if each success had been applied as it happened, failures left out.
    from jobprocessor.processor import CPU_LANE, _InFlight, _Tick
    from jobprocessor.queries import Outcome

    tick = _Tick(engine, settings, "test-token", limit=10, budget_s=10, job_type=None, app=app)
    lane = tick.lanes[CPU_LANE]
    runs = [("succeeded", 0.004), ("failed", 0.5), ("succeeded", 0.001), ("succeeded", 0.010), ("retried", 0.3)]
    at = time.monotonic() + 100  # when the run's jobs ended (later than the call's start)
    for start_mean in (None, 0.02):
        lane.mean_run_s, expected = start_mean, start_mean
        flight = _InFlight(lane, None)
        for job_id, (kind, seconds) in enumerate(runs):
            flight.keep(Outcome(job_id, "completed"), kind, seconds, ended=at + job_id)
            if kind == "succeeded":
                expected = seconds if expected is None else 0.8 * expected + 0.2 * seconds
        with tick.cond:
            flight.hand_over(tick)
        assert lane.mean_run_s == pytest.approx(expected, rel=1e-12)
    assert tick.counts == {"succeeded": 6, "failed": 2, "retried": 2}
    assert tick.busy_s == pytest.approx(2 * sum(seconds for _, seconds in runs))
    assert len(tick.unflushed) == 10 and tick.oldest_unflushed == at and tick.last_activity == at + 4


def test_an_empty_round_after_the_call_stopped_claiming_wakes_the_threads_under_the_lock(app, engine, settings):
    # A lane thread that cannot record a start (the database went away) stops the call's claiming while the
    # coordinator's next round claims nothing: that round wakes every thread, which must be done holding the call's
    # lock (it raised "cannot notify on un-acquired lock": a 500 in tests/e2e/test_faults.py's kill storm).
    from jobprocessor.processor import _Tick

    tick = _Tick(engine, settings, "test-token", limit=10, budget_s=10, job_type=None, app=app)
    tick.claiming = False  # as _run_started() sets it on StartFailed, between the round's start and its end
    assert tick._claim_round(size=5) == 0  # the queue is empty


def test_expired_leases_are_rescued(app, engine, settings):
    started = dict(status="'running'", locked_by="'dead-worker'", locked_until="now() - interval '1 second'",
                   started_at="now() - interval '2 minutes'")
    retry = insert_jobs(engine, 2, "test.echo", attempts="1", max_attempts="3", **started)
    spent = insert_jobs(engine, 1, "test.echo", attempts="3", max_attempts="3", **started)
    # leased ahead of a free thread, never started: its attempt was never spent
    (unstarted,) = insert_jobs(engine, 1, "test.echo", status="'running'", attempts="2", max_attempts="2",
                               locked_by="'dead-worker'", locked_until="now() - interval '1 second'",
                               last_error="'an earlier error'")
    alive = insert_jobs(engine, 1, "test.echo", status="'running'", attempts="1", locked_by="'live-worker'",
                        locked_until="now() + interval '5 minutes'", started_at="now()")
    summary = run(app, engine, settings, limit=10)
    assert summary.rescued == 4
    assert one(engine, spent[0])["status"] == "failed"
    assert "lease expired: dead-worker" in one(engine, spent[0])["last_error"]
    assert [one(engine, i)["status"] for i in retry] == ["pending", "pending"]
    back = one(engine, unstarted)
    assert (back["status"], back["attempts"], back["last_error"]) == ("pending", 2, "an earlier error")
    assert one(engine, alive[0])["status"] == "running"
    second = run(app, engine, settings, limit=10)  # rescued jobs are due again
    assert second.claimed == 3 and all(one(engine, i)["status"] == "completed" for i in retry + [unstarted])
    assert one(engine, retry[0])["attempts"] == 2 and one(engine, unstarted)["attempts"] == 3


def test_a_stale_worker_cannot_overwrite_a_job_it_no_longer_owns(engine):
    (job_id,) = insert_jobs(engine, 1, "test.echo")
    with engine.begin() as conn:
        claimed = queries.claim(conn, limit=1, worker="A", lease_s=60)
    assert [row["id"] for row in claimed.jobs] == [job_id]
    with engine.begin() as conn:  # A's lease ran out; B rescued and re-claimed the job
        conn.execute(text("UPDATE jobs SET locked_by = 'B' WHERE id = :id"), {"id": job_id})
    with engine.begin() as conn:
        written = queries.finish(conn, "A", [queries.Outcome(job_id, "completed", result_json="1")])
    assert written == set()
    assert one(engine, job_id)["status"] == "running" and one(engine, job_id)["locked_by"] == "B"


# --- concurrency ----------------------------------------------------------------------------------------------------

def _executions(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*), count(DISTINCT job_id) FROM job_executions")).one()


def test_eight_concurrent_threads_run_every_job_exactly_once(app, engine, settings):
    insert_jobs(engine, 2000, "test.record", store_id="'s' || (g % 7)")
    concurrent = dataclasses.replace(settings, JOBS_CONCURRENCY=4, DB_POOL_MAX=60)
    claimed, errors = [], []

    def caller():
        try:
            ticks = drain_until_idle(lambda: process_pending(engine, concurrent, limit=50, budget_s=30, app=app))
            claimed.extend(t.claimed for t in ticks)
        except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sum(claimed) == 2000
    assert tuple(_executions(engine)) == (2000, 2000)
    assert not fetch_jobs(engine, "status <> 'completed'")


def test_eight_concurrent_processes_run_every_job_exactly_once(database_url, engine):
    insert_jobs(engine, 2000, "test.record", store_id="'s' || (g % 11)")
    ctx = multiprocessing.get_context("spawn")
    totals = ctx.Queue()
    from tests.support.drain_worker import drain

    procs = [ctx.Process(target=drain, args=(database_url, SECRET, 40, totals)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sum(totals.get(timeout=5) for _ in procs) == 2000
    count, distinct = _executions(engine)
    assert (count, distinct) == (2000, 2000)
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT count(DISTINCT pid) FROM job_executions")).scalar_one()
    assert pids > 1  # the work really was shared between processes
    assert not fetch_jobs(engine, "status <> 'completed'")


@pytest.mark.parametrize("limit", [1, 7])
def test_claim_takes_at_most_limit(app, engine, settings, limit):
    insert_jobs(engine, 20, "test.echo")
    assert run(app, engine, settings, limit=limit).claimed == limit
    assert len(fetch_jobs(engine, "status = 'completed'")) == limit


def test_no_job_starts_when_the_budget_is_already_spent(app, engine, settings):
    # a budget shorter than the claim itself: every job claimed is given back unstarted, as it was
    ids = insert_jobs(engine, 3, "test.sleep", run_at="now() - interval '1 minute'")
    before = {j["id"]: j["run_at"] for j in fetch_jobs(engine)}
    summary = run(app, engine, settings, limit=10, budget_s=0.0001)
    assert (summary.claimed, summary.released, summary.succeeded) == (3, 3, 0)
    for job in fetch_jobs(engine, "id = ANY(:ids)", ids=ids):
        assert (job["status"], job["attempts"], job["started_at"]) == ("pending", 0, None)
        assert job["run_at"] == before[job["id"]]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_executions")).scalar_one() == 0


def test_jobs_given_back_when_every_thread_is_stuck_get_their_attempts_back(app, engine, settings):
    # test.hang measured quick (1 ms), so the call's later rounds are started by the claim itself (attempt spent in
    # the claim) and a thread takes several of them in one run, one START for those the claim had not started. Its
    # one thread then hangs in the first job of its run: the rest of that run (given back by the hung thread when it
    # returns, after the call) and everything claimed meanwhile (released when the call stops) never ran, so each
    # must be pending again as it was: attempt given back, no started_at.
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) "
                          "VALUES ('test.hang', ARRAY[0.001, 0.001, 0.001]::real[], 3)"))
    ids = insert_jobs(engine, 40, "test.hang", run_at="now() - make_interval(secs => 100 - g)")
    HANG_FOREVER.clear()
    try:
        # the budget (2.5 s) ends before the hung job (timeout 1 s) is abandoned at its deadline + GRACE_S, so the
        # replacement thread finds no time left and releases what is waiting; it leaves a slow first claim 2 s
        summary = run(app, engine, settings, limit=40, budget_s=2.5, JOBS_CONCURRENCY=1)
        assert summary.claimed == 40 and summary.abandoned == 1 and summary.released >= 1
        # the hung job (the oldest: first in claim order) and the rest of its run: held while their thread lives
        hung, *run_rest = fetch_jobs(engine, "status = 'running'")
        assert hung["id"] == ids[0] and run_rest
        claim_started = fetch_jobs(engine, "status = 'pending'")
        assert claim_started and {(j["attempts"], j["started_at"], j["locked_by"]) for j in claim_started} == \
            {(0, None, None)}
    finally:
        HANG_FOREVER.set()  # the hung handler returns: its thread records it and gives back the rest of its run
    for _ in range(100):
        if one(engine, hung["id"])["status"] == "completed":
            break
        time.sleep(0.1)
    HANG_FOREVER.clear()
    assert one(engine, hung["id"])["attempts"] == 1 and one(engine, hung["id"])["status"] == "completed"
    for _ in range(50):  # the give-back follows the hung job's outcome, from the same thread
        if not fetch_jobs(engine, "status = 'running'"):
            break
        time.sleep(0.1)
    rest = fetch_jobs(engine, "id <> :id", id=hung["id"])
    assert [j["id"] for j in rest] == [i for i in ids if i != hung["id"]]
    assert {(j["status"], j["attempts"], j["started_at"], j["locked_by"]) for j in rest} == \
        {("pending", 0, None, None)}
    assert len(rest) == len(claim_started) + len(run_rest)  # the rest of the run: given back by its thread


@pytest.mark.parametrize("taken_over", ["re-claimed by another call", "rescued back to pending"])
def test_a_job_whose_lease_was_taken_over_before_it_started_is_not_started(app, engine, settings, taken_over):
    # The lease decides who may start a job: a job claimed ahead of a busy thread whose lease then went to another
    # call (it ran out and was rescued, and maybe claimed again) is no longer this call's: its thread must not start
    # it (START's locked_by fence), or the job would run twice at once and spend an attempt for nothing.
    (blocker,) = insert_jobs(engine, 1, "test.hang", priority="1")  # the call's one thread waits in it
    (ahead,) = insert_jobs(engine, 1, "test.record")  # claimed in the same round, waiting for that thread
    HANG_FOREVER.clear()
    result = {}
    caller = threading.Thread(target=lambda: result.update(summary=run(app, engine, settings, budget_s=20,
                                                                       JOBS_CONCURRENCY=1)))
    caller.start()
    try:
        for _ in range(200):
            if one(engine, blocker)["started_at"] is not None:
                break
            time.sleep(0.05)
        claimed = one(engine, ahead)
        assert one(engine, blocker)["started_at"] is not None and claimed["status"] == "running"
        assert claimed["started_at"] is None and claimed["locked_by"] == one(engine, blocker)["locked_by"]
        with engine.begin() as conn:
            if taken_over == "re-claimed by another call":
                conn.execute(text("UPDATE jobs SET locked_by = 'another-call', locked_until = now() + interval "
                                  "'1 minute' WHERE id = :id"), {"id": ahead})
            else:
                conn.execute(text("UPDATE jobs SET status = 'pending', locked_by = NULL, locked_until = NULL "
                                  "WHERE id = :id"), {"id": ahead})
    finally:
        HANG_FOREVER.set()
    caller.join(30)
    HANG_FOREVER.clear()
    summary = result["summary"]
    assert summary.claimed == 2 and summary.lost == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_executions")).scalar_one() == 0  # never ran here
    job = one(engine, ahead)
    assert (job["attempts"], job["started_at"]) == (0, None)
    if taken_over == "re-claimed by another call":
        assert (job["status"], job["locked_by"]) == ("running", "another-call")  # still the other call's
    else:
        assert (job["status"], job["locked_by"]) == ("pending", None)


def test_a_call_rescues_at_most_jobs_rescue_limit_expired_leases(app, engine, settings):
    # 5 expired leases of a type no process here handles (so what is rescued stays pending, and each call is its
    # one claim statement): JOBS_RESCUE_LIMIT=2 rescues 2, 2, then the last one; the rest wait for the next call.
    # (The limit bounds one claim statement: a call of several rounds may rescue that many in each, as README says.)
    insert_jobs(engine, 5, "nobody.handles.this", status="'running'", attempts="1", locked_by="'dead-worker'",
                started_at="now() - interval '2 minutes'", locked_until="now() - make_interval(secs => 10 - g)")
    rescued = [run(app, engine, settings, JOBS_RESCUE_LIMIT=2).rescued for _ in range(4)]
    assert rescued == [2, 2, 1, 0]
    assert {(j["status"], j["locked_by"]) for j in fetch_jobs(engine)} == {("pending", None)}
