"""A call works until its budget ends (issue 10), against a real PostgreSQL: rounds, the start rule with shared
estimates, deadlines and budget cuts, new work picked up during a call, the idle grace, leases kept while a handler
runs, bounded ticks per process, bounded deferral, tick history and its alerts."""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime

from sqlalchemy import text

from jobprocessor.processor import GRACE_S
from tests.support.calls import executions, one, run, samples
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH

# --- rounds and the start rule ---------------------------------------------------------------------------------------

def test_a_call_claims_in_rounds_and_keeps_its_threads_busy_until_the_budget_ends(app, engine, settings):
    # 0.1 s jobs that declare no timeout (the 30 s default exceeds the 6 s budget): the first wave measures them,
    # then the call keeps its 4 threads busy, round after round, until the budget ends. Before, one wave of 4 ran.
    # Until measured, a job may start while half the budget is left: 3 s, so a stalled first claim (a loaded CI
    # machine once took 1.5 s) still leaves the first wave room to start.
    insert_jobs(engine, 400, "test.no_timeout", payload="'{\"seconds\": 0.1}'", store_id="'s' || (g % 5)")
    started = time.monotonic()
    summary = run(app, engine, settings, budget_s=6, JOBS_CONCURRENCY=4)
    elapsed = time.monotonic() - started
    assert summary.rounds > 3 and summary.succeeded >= 120  # 4 threads x 6 s / 0.1 s = 240 at most
    assert summary.claimed == summary.succeeded + summary.released and summary.claimed < 400
    assert elapsed < 6 + GRACE_S
    assert executions(engine) == summary.succeeded
    # what was not started is pending as it was; the measured run times are shared with every later call
    assert {(j["attempts"], j["started_at"]) for j in fetch_jobs(engine, "status = 'pending'")} == {(0, None)}
    known = samples(engine, "test.no_timeout")
    assert len(known) >= 3 and all(0.09 < s < 2 for s in known)


def test_the_start_rule_uses_the_estimate_shared_by_other_processes(app, engine, settings):
    # another process measured test.no_timeout at 5 s a run: with 4 s of budget none may start (its timeout,
    # 30 s, capped at half the budget would have let a first wave start); measured at 0.05 s, they run (0.5 s of
    # work for 2 threads: the 4 s leave room for a loaded machine)
    insert_jobs(engine, 20, "test.no_timeout", payload="'{\"seconds\": 0.05}'")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) "
                          "VALUES ('test.no_timeout', ARRAY[5, 5, 5]::real[], 3)"))
    slow = run(app, engine, settings, budget_s=4, JOBS_CONCURRENCY=2)
    assert (slow.succeeded, slow.released) == (0, slow.claimed) and slow.claimed > 0
    assert executions(engine) == 0
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_type_runtimes SET recent_s = ARRAY[0.05, 0.05, 0.05]::real[]"))
    quick = run(app, engine, settings, budget_s=4, JOBS_CONCURRENCY=2)
    assert quick.succeeded == 20


def test_deadline_is_the_earlier_of_the_timeout_and_the_budget_end(app, engine, settings):
    (long_one,) = insert_jobs(engine, 1, "test.no_timeout", payload="'{\"seconds\": 0}'")  # 30 s timeout
    started = time.time()
    run(app, engine, settings, budget_s=4)
    deadline = datetime.fromisoformat(one(engine, long_one)["result"]["deadline"]).timestamp()
    assert started + 3.5 < deadline < started + 4.5  # the budget's end, not 30 s


def test_a_handler_without_a_timeout_gets_jobs_default_timeout_s(app, engine, settings):
    # test.no_timeout declares no timeout_s: JOBS_DEFAULT_TIMEOUT_S (2 s here) is its timeout, so its deadline is
    # 2 s after it starts, long before the 20 s budget's end (the bound below leaves 8 s for a slow claim)
    (job_id,) = insert_jobs(engine, 1, "test.no_timeout", payload="'{\"seconds\": 0}'")
    started = time.time()
    summary = run(app, engine, settings, budget_s=20, JOBS_DEFAULT_TIMEOUT_S=2.0)
    assert summary.succeeded == 1
    deadline = datetime.fromisoformat(one(engine, job_id)["result"]["deadline"]).timestamp()
    assert started + 2 < deadline < started + 10


def test_a_job_cut_short_by_the_budget_gets_its_attempt_back(app, engine, settings):
    (cut,) = insert_jobs(engine, 1, "test.until_deadline", run_at="now() - interval '1 minute'")  # timeout 30 s
    run_at = one(engine, cut)["run_at"]
    summary = run(app, engine, settings, budget_s=1.5)
    job = one(engine, cut)
    assert summary.retried == 1
    assert (job["status"], job["attempts"], job["deferrals"], job["run_at"]) == ("pending", 0, 1, run_at)
    assert job["last_error"].startswith("cut short by the end of the call's budget: TimeoutError")
    assert job["deferred_since"] is not None


def test_a_job_that_overruns_its_own_timeout_spends_its_attempt(app, engine, settings):
    (own,) = insert_jobs(engine, 1, "test.quick_sleep", payload="'{\"seconds\": 0.1}'")
    with engine.begin() as conn:  # a handler that raises at its own deadline (1 s), well inside the budget
        conn.execute(text("UPDATE jobs SET type = 'test.until_deadline_1s' WHERE id = :id"), {"id": own})
    from jobprocessor.handlers import handler

    @handler("test.until_deadline_1s", max_attempts=3, timeout_s=1)
    def until_own_deadline(job):
        time.sleep(job.time_left())
        raise TimeoutError("too slow")

    try:
        run(app, engine, settings, budget_s=10)
    finally:
        from jobprocessor.handler_registry import unregister

        unregister("test.until_deadline_1s")
    job = one(engine, own)
    assert (job["status"], job["attempts"], job["deferrals"]) == ("pending", 1, 0)
    assert job["last_error"] == "TimeoutError: too slow" and job["run_at"] > job["created_at"]


# --- new work, idle grace --------------------------------------------------------------------------------------------

def test_a_job_enqueued_while_a_call_runs_is_started_by_that_call(app, engine, settings):
    insert_jobs(engine, 2, "test.sleep", payload="'{\"seconds\": 2}'")
    result = {}
    caller = threading.Thread(target=lambda: result.update(s=run(app, engine, settings, budget_s=6,
                                                                 JOBS_CONCURRENCY=4)))
    caller.start()
    time.sleep(0.7)  # the call is busy with its two sleepers and has free threads
    (late,) = insert_jobs(engine, 1, "test.echo")
    caller.join(15)
    job = one(engine, late)
    assert job["status"] == "completed" and result["s"].claimed == 3
    assert (job["started_at"] - job["created_at"]).total_seconds() < 1.5  # picked up by polling, not the next tick


def test_a_call_whose_queue_runs_dry_ends_after_the_idle_grace(app, engine, settings):
    insert_jobs(engine, 3, "test.echo")
    started = time.monotonic()
    summary = run(app, engine, settings, budget_s=20, JOBS_IDLE_GRACE_S=1.0)
    elapsed = time.monotonic() - started
    assert summary.succeeded == 3 and 1.0 <= elapsed < 3
    started = time.monotonic()  # nothing due at all: it answers at once, whatever the grace
    assert run(app, engine, settings, budget_s=20, JOBS_IDLE_GRACE_S=5.0).claimed == 0
    assert time.monotonic() - started < 1


def test_a_job_falling_due_within_the_grace_is_run_by_the_same_call(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.later_once", payload="'{\"seconds\": 1.5}'")
    summary = run(app, engine, settings, budget_s=20, JOBS_IDLE_GRACE_S=2.0)
    assert (summary.claimed, summary.retried, summary.succeeded) == (2, 1, 1)
    assert one(engine, job_id)["status"] == "completed"


# --- leases follow the work -------------------------------------------------------------------------------------------

def test_a_handler_that_runs_past_the_lease_keeps_its_job(app, engine, settings):
    # lease 5 s, a 7 s job: its call renews the lease while the handler runs, so no other call rescues or re-runs it
    (slow,) = insert_jobs(engine, 1, "test.no_timeout", payload="'{\"seconds\": 7}'")
    result = {}
    caller = threading.Thread(target=lambda: result.update(s=run(app, engine, settings, budget_s=10,
                                                                 JOBS_LEASE_S=5)))
    caller.start()
    time.sleep(6)  # past the lease it was claimed with
    other = run(app, engine, settings, budget_s=1, JOBS_LEASE_S=5)
    caller.join(15)
    assert (other.claimed, other.rescued) == (0, 0)
    assert result["s"].succeeded == 1 and executions(engine) == 1
    assert (one(engine, slow)["status"], one(engine, slow)["attempts"]) == ("completed", 1)


# --- bounded ticks, bounded deferral ---------------------------------------------------------------------------------

def test_a_process_runs_at_most_its_ticks_and_refuses_more_at_once(app, engine, settings, client):
    from jobprocessor import ticks

    insert_jobs(engine, 1, "test.sleep", payload="'{\"seconds\": 1.5}'")
    app.extensions["jobprocessor"].settings = dataclasses.replace(settings, JOBS_MAX_TICKS_PER_PROCESS=1)
    try:
        first = threading.Thread(target=lambda: client.post("/process-pending", headers=AUTH))
        first.start()
        deadline = time.monotonic() + 5
        while ticks.GATE.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        refused = client.post("/process-pending", headers=AUTH)
        assert time.monotonic() - started < 0.5
        assert refused.status_code == 200 and refused.json["busy"] is True and refused.json["claimed"] == 0
        assert "JOBS_MAX_TICKS_PER_PROCESS" in refused.json["message"]
        first.join(10)
        assert client.post("/process-pending", headers=AUTH).json["busy"] is False
    finally:
        app.extensions["jobprocessor"].settings = settings


def test_retry_later_is_bounded(app, engine, settings, client):
    (job_id,) = insert_jobs(engine, 1, "test.deferred_forever")
    for _ in range(10):
        if one(engine, job_id)["status"] == "failed":
            break
        run(app, engine, settings, budget_s=5, JOBS_MAX_DEFERRALS=3)
    job = one(engine, job_id)  # the run that went over the bound is not given back: it ended the job
    assert (job["status"], job["attempts"], job["deferrals"]) == ("failed", 1, 3)
    assert job["last_error"].startswith("deferred 4 times without running to an end (JOBS_MAX_DEFERRALS=3); "
                                        "last: RetryLater: not yet (deferral 4)")
    # a manual retry starts the count afresh
    retried = client.post(f"/jobs/{job_id}/retry", headers=AUTH).json
    assert (retried["status"], retried["deferrals"], retried["deferred_since"]) == ("pending", 0, None)


def test_retry_later_is_bounded_in_time(app, engine, settings):
    (job_id,) = insert_jobs(engine, 1, "test.deferred_forever", deferrals="1",
                            deferred_since="now() - interval '2 hours'")
    run(app, engine, settings, budget_s=5, JOBS_MAX_DEFERRAL_S=3600)
    job = one(engine, job_id)
    assert job["status"] == "failed" and "JOBS_MAX_DEFERRAL_S=3600" in job["last_error"]


# --- tick history and its alerts --------------------------------------------------------------------------------------

def ticks_table(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM job_ticks ORDER BY id")).mappings().all()


def test_every_call_records_itself(app, engine, settings, client):
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_ticks"))
    assert client.post("/process-pending?budget_s=5", headers=AUTH).json["claimed"] == 0
    insert_jobs(engine, 30, "test.echo")
    body = client.post("/process-pending?budget_s=5&limit=20", headers=AUTH).json
    idle, busy = ticks_table(engine)
    assert (idle["claimed"], idle["rounds"], idle["job_limit"]) == (0, 0, 10000)
    assert idle["ended_at"] is not None and idle["ended_at"] >= idle["started_at"]
    assert busy["worker"] == body["worker"] and busy["ended_at"] is not None
    assert (busy["claimed"], busy["succeeded"], busy["rounds"], busy["job_limit"], busy["budget_s"]) == \
        (20, 20, body["rounds"], 20, 5.0)
    listed = client.get("/ticks?limit=1", headers=AUTH).json
    assert [t["id"] for t in listed["ticks"]] == [busy["id"]] and listed["next_before"] == busy["id"]
    assert 0 <= listed["last_tick_age_s"] < 60
    older = client.get(f"/ticks?before={busy['id']}", headers=AUTH).json
    assert [t["id"] for t in older["ticks"]] == [idle["id"]] and older["next_before"] is None


def alerts(engine) -> dict:
    with engine.connect() as conn:
        return {row.alert: row for row in conn.execute(text("SELECT * FROM job_queue_alerts"))}


def test_the_no_tick_alert_fires_when_the_cron_stops_calling(app, engine, settings):
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_ticks"))
        conn.execute(text("UPDATE job_queue_alert_settings SET no_tick_after_s = 300"))
    assert "no_tick" not in alerts(engine)  # a fresh install with nothing due: quiet
    insert_jobs(engine, 1, "test.echo", run_at="now() + interval '1 hour'")
    (due,) = insert_jobs(engine, 1, "test.echo", run_at="now() - interval '1 minute'")
    assert "no_tick" not in alerts(engine)  # just enqueued: the first call may well be on its way
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() - interval '6 minutes' WHERE id = :id"), {"id": due})
    never = alerts(engine)["no_tick"]
    assert never.severity == "critical" and "no /process-pending call has been recorded yet" in never.message
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_ticks (worker, started_at, ended_at, job_limit, budget_s) "
                          "VALUES ('w', now() - interval '10 minutes', now() - interval '10 minutes', 10, 50)"))
    stale = alerts(engine)["no_tick"]
    assert stale.severity == "critical" and 599 < stale.value < 700 and "1 jobs are due" in stale.message
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() + interval '1 hour' WHERE id = :id"), {"id": due})
    assert alerts(engine)["no_tick"].severity == "warning"
    run(app, engine, settings, budget_s=2)  # the cron is back
    assert "no_tick" not in alerts(engine)


def test_the_stuck_handler_alert(app, engine, settings):
    insert_jobs(engine, 1, "test.echo", status="'running'", started_at="now() - interval '2 hours'",
                locked_by="'w'", locked_until="now() + interval '1 minute'")
    insert_jobs(engine, 1, "test.echo", status="'running'", started_at="now() - interval '1 minute'",
                locked_by="'w'", locked_until="now() + interval '1 minute'")
    stuck = alerts(engine)["stuck_handler"]
    assert stuck.value == 1 and stuck.threshold == 900 and stuck.severity == "warning"


def test_cleanup_prunes_old_ticks(app, engine, settings):
    from jobprocessor.maintenance.cleaner import Cleaner, CleanerConfig

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_ticks"))
        conn.execute(text("INSERT INTO job_ticks (worker, started_at, job_limit, budget_s) "
                          "SELECT 'w', now() - make_interval(days => g), 10, 50 FROM generate_series(1, 10) g"))
    config = CleanerConfig.from_settings(dataclasses.replace(settings, JOBS_TICK_HISTORY_DAYS=3.5))
    report = Cleaner(engine, config).run_once(budget_s=30)
    assert report.ticks_deleted == 7 and len(ticks_table(engine)) == 3


def test_every_round_is_fair_across_stores(app, engine, settings):
    # one big store enqueued first, then 9 stores with one job each: the first round (a thread + prefetch: 3 jobs)
    # serves the big store once and two small ones, the second (what the thread gets through in half a second) the
    # other small stores before the big store's backlog, and the later rounds serve what is left. One thread, so
    # the executions' order is the order the call started them in (with 4, a thread descheduled between taking its
    # job and recording it let jobs of the next round's big store go first on a loaded machine)
    insert_jobs(engine, 60, "test.no_timeout", payload="'{\"seconds\": 0.03}'", store_id="'big'",
                run_at="now() - interval '1 hour'")
    insert_jobs(engine, 9, "test.no_timeout", payload="'{\"seconds\": 0.03}'", store_id="'small-' || g")
    summary = run(app, engine, settings, budget_s=20, JOBS_CONCURRENCY=1)
    assert summary.succeeded == 69 and summary.rounds >= 3
    with engine.connect() as conn:
        order = [row.store_id for row in conn.execute(text(
            "SELECT j.store_id FROM job_executions e JOIN jobs j ON j.id = e.job_id ORDER BY e.at"))]
    assert {s for s in order[:12] if s != "big"} == {f"small-{i}" for i in range(1, 10)}


def test_quick_types_are_started_by_the_claim_and_slow_ones_one_by_one(app, engine, settings):
    from sqlalchemy import event

    from jobprocessor import queries

    # test.echo measured at 1 ms (quick: its claim starts it), test.no_timeout at 0.05 s (started by START)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) VALUES "
                          "('test.echo', ARRAY[0.001, 0.001, 0.001]::real[], 3), "
                          "('test.no_timeout', ARRAY[0.05, 0.05, 0.05]::real[], 3)"))
    insert_jobs(engine, 200, "test.echo")
    insert_jobs(engine, 10, "test.no_timeout", payload="'{\"seconds\": 0.05}'")
    started_by_start = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("UPDATE jobs SET attempts = attempts + 1"):
            started_by_start.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        summary = run(app, engine, settings, budget_s=20, JOBS_CONCURRENCY=4)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert summary.succeeded == 210
    assert {j["attempts"] for j in fetch_jobs(engine)} == {1}
    assert 1 <= len(started_by_start) <= 10 + 4  # the first round's and the slow jobs', not one per quick job
    with engine.begin() as conn:  # a quick job the claim started and that is then given back regains its attempt
        claim = queries.claim(conn, limit=1, worker="w", lease_s=60, start_types=["test.echo"])
    assert claim.jobs == []  # all done; now one more, claimed started, released by FINISH
    (job_id,) = insert_jobs(engine, 1, "test.echo")
    with engine.begin() as conn:
        (row,) = queries.claim(conn, limit=1, worker="w", lease_s=60, start_types=["test.echo"]).jobs
        assert row["started"] and one(engine, job_id)["attempts"] == 0  # not visible outside yet
    assert one(engine, job_id)["attempts"] == 1
    with engine.begin() as conn:
        queries.finish(conn, "w", [queries.Outcome(job_id, "pending", delay_s=None, give_back_attempt=True)])
    assert (one(engine, job_id)["attempts"], one(engine, job_id)["status"]) == (0, "pending")


def test_every_successful_run_of_a_call_is_counted_in_the_shared_run_times(app, engine, settings):
    """Runs of quick jobs hand their run times to the call's book in one go: all of them are in before the call
    saves the book for the last time (job_type_runtimes.runs counts every successful run)."""
    insert_jobs(engine, 300, "test.echo")
    summary = run(app, engine, settings, JOBS_CONCURRENCY=2)
    assert summary.succeeded == 300
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT runs FROM job_type_runtimes WHERE type = 'test.echo'")).scalar_one()
    assert runs == 300


def test_a_call_after_quick_calls_claims_its_limit_in_one_round(app, engine, settings):
    """A call's first round is claimed before it reads any estimate; a process whose recent calls measured its types
    quick sizes it as a later round would be, so a call of 500 quick jobs is one claim, not a round for the free
    threads and then the rest. A fresh process (nothing remembered) still starts small. The pace is the jobs the
    last call ran: a slow type this process has a handler for but nobody enqueues does not keep it small."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) "
                          "VALUES ('test.no_timeout', ARRAY[5, 5, 5]::real[], 3)"))
    insert_jobs(engine, 300, "test.echo")
    first = run(app, engine, settings, limit=300, budget_s=20, JOBS_CONCURRENCY=4)
    assert first.succeeded == 300 and first.rounds >= 2  # nothing remembered yet: a small first round
    insert_jobs(engine, 500, "test.echo")
    second = run(app, engine, settings, limit=500, budget_s=20, JOBS_CONCURRENCY=4)
    assert second.succeeded == 500 and second.rounds == 1


def test_the_run_times_of_a_run_whose_last_handler_hangs_are_saved_when_the_call_ends(app, engine, settings):
    """A run of quick jobs keeps its run times back until it ends; when a later handler of the run hangs and is
    abandoned, the coordinator takes what the run measured, so the call's last save has it even if the handler
    never returns (the process may be killed while it hangs)."""
    from tests.support.job_handlers import HANG_FOREVER

    with engine.begin() as conn:  # both quick: one thread takes them as one run (echo x 5, then the hang)
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) VALUES "
                          "('test.echo', ARRAY[0.002, 0.002, 0.002]::real[], 3), "
                          "('test.hang', ARRAY[0.002, 0.002, 0.002]::real[], 3)"))
    insert_jobs(engine, 5, "test.echo", run_at="now() - interval '1 minute'")
    (hung,) = insert_jobs(engine, 1, "test.hang")  # timeout_s=1
    HANG_FOREVER.clear()
    try:
        summary = run(app, engine, settings, limit=6, budget_s=20, JOBS_CONCURRENCY=1)
        assert (summary.succeeded, summary.abandoned) == (5, 1)
        with engine.connect() as conn:  # read while the handler still hangs
            runs = conn.execute(text("SELECT runs FROM job_type_runtimes WHERE type = 'test.echo'")).scalar_one()
        assert runs == 3 + 5
    finally:
        HANG_FOREVER.set()
    for _ in range(50):
        if one(engine, hung)["status"] == "completed":
            break
        time.sleep(0.1)
    HANG_FOREVER.clear()
