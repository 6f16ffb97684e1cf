"""Recurring jobs: job_schedules, enqueue of due slots (once, even with concurrent callers), `flask jobs schedule`."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import event, text

from jobprocessor import schedules
from jobprocessor.maintenance.scheduler import Scheduler, SchedulerConfig, SchedulerResult
from jobprocessor.policies.cron_expr import Cron
from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs, insert_jobs


def add(engine, name="every-minute", cron="* * * * *", job_type="test.echo", due_seconds_ago=None, **fields):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_schedules (name, cron, job_type, payload, next_run_at, enabled) "
                          "VALUES (:name, :cron, :job_type, CAST(:payload AS jsonb), "
                          "date_trunc('minute', now()) - make_interval(secs => :ago), :enabled)"),
                     {"name": name, "cron": cron, "job_type": job_type,
                      "payload": json.dumps(fields.get("payload", {})),
                      "ago": due_seconds_ago if due_seconds_ago is not None else 60,
                      "enabled": fields.get("enabled", True)})


def schedule(engine, name):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM job_schedules WHERE name = :n"), {"n": name}).mappings().one()


def test_due_schedule_enqueues_one_job_and_moves_to_the_next_slot(app, engine, settings):
    add(engine, payload={"x": 1})
    slot = schedule(engine, "every-minute")["next_run_at"]
    summary = process_pending(engine, settings, limit=10, budget_s=10, app=app)
    assert summary.claimed == 1 and summary.succeeded == 1  # enqueued after the first round, claimed by the next
    # and then the queue was dry: the call ended (no idle grace in tests) instead of polling to its budget's end,
    # where it would also take the next minute's slot
    assert summary.duration_ms < 5000, summary
    job, = fetch_jobs(engine)
    assert job["type"] == "test.echo" and job["payload"] == {"x": 1}
    assert job["idempotency_key"] == f"schedule:every-minute:{slot.astimezone(timezone.utc).isoformat()}"
    row = schedule(engine, "every-minute")
    with engine.connect() as conn:
        now = conn.execute(text("SELECT now()")).scalar_one()
    assert row["next_run_at"] == Cron.parse("* * * * *").next_after(now) and row["next_run_at"] > now
    assert row["last_job_id"] == job["id"] and row["last_enqueued_at"] is not None
    assert process_pending(engine, settings, limit=10, budget_s=10, app=app).claimed == 0  # not due again


def test_missed_slots_collapse_into_one_run(app, engine, settings):
    add(engine, due_seconds_ago=3 * 86400)  # three days of minutes missed
    assert Scheduler(engine, settings).run_once() == SchedulerResult(enqueued=1)
    assert len(fetch_jobs(engine)) == 1


def test_disabled_and_future_schedules_do_nothing(app, engine, settings):
    add(engine, name="off", enabled=False)
    add(engine, name="future", due_seconds_ago=-3600)
    assert Scheduler(engine, settings).run_once().enqueued == 0
    assert fetch_jobs(engine) == []


def test_concurrent_callers_enqueue_each_slot_once(app, engine, settings):
    for i in range(20):
        add(engine, name=f"s{i}")
    barrier = threading.Barrier(8)
    results = []

    def caller():
        barrier.wait()
        with app.app_context():
            results.append(Scheduler(engine, settings).run_once())

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.enqueued for r in results) == 20
    jobs = fetch_jobs(engine)
    assert len(jobs) == 20 and len({job["idempotency_key"] for job in jobs}) == 20



def test_one_pass_enqueues_at_most_its_limit_and_the_rest_next_pass(app, engine, settings):
    for i in range(5):
        add(engine, name=f"s{i}")
    scheduler = Scheduler(engine, settings, SchedulerConfig(limit=2))
    assert [scheduler.run_once().enqueued for _ in range(4)] == [2, 2, 1, 0]
    assert SchedulerConfig.from_settings(settings).limit == settings.JOBS_SCHEDULES_PER_RUN
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="limit"):
            SchedulerConfig(limit=bad)


def test_a_failing_scheduler_does_not_fail_the_call(app, engine, settings, monkeypatch, caplog):
    add(engine)
    insert_jobs(engine, 3, "test.echo")

    def broken(self):
        raise RuntimeError("scheduler down")

    monkeypatch.setattr(Scheduler, "run_once", broken)
    summary = process_pending(engine, settings, limit=10, budget_s=10, app=app)
    assert summary.succeeded == 3 and schedule(engine, "every-minute")["last_job_id"] is None
    assert '{"event": "scheduler", "error": true}' in caplog.text  # one JSON line a log alert can match


def test_cli_schedule_run_enqueues_the_due_slots(app, engine):
    add(engine)
    ran = app.test_cli_runner().invoke(args=["jobs", "schedule", "run"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output) == {"enqueued": 1, "duplicates": 0, "invalid": 0}
    assert [job["type"] for job in fetch_jobs(engine)] == ["test.echo"]

def test_a_schedule_another_caller_holds_is_skipped_not_waited_for(app, engine, settings):
    """Two real connections: the first holds one due schedule's row lock (another call enqueuing it, not yet
    committed); a caller on the second, under a lock_timeout that fails it if it waits, enqueues the other due
    schedule at once and leaves the held one -- whose slot the next caller takes once the lock is gone."""
    add(engine, name="held")
    add(engine, name="free")
    with engine.connect() as holder:
        hold = holder.begin()
        holder.execute(text("SELECT name FROM job_schedules WHERE name = 'held' FOR UPDATE"))
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                result = schedules.enqueue_due(conn, settings, limit=10)
        finally:
            hold.rollback()
    assert (result.enqueued, result.duplicates) == (1, 0)
    (job,) = fetch_jobs(engine)
    assert job["idempotency_key"].startswith("schedule:free:")
    assert Scheduler(engine, settings).run_once().enqueued == 1  # the held one, now free
    assert sorted(j["idempotency_key"].split(":")[1] for j in fetch_jobs(engine)) == ["free", "held"]


def test_a_slot_seen_twice_is_not_enqueued_twice(app, engine, settings):
    """The idempotency key is the second fence: a slot whose job exists already adds nothing."""
    add(engine)
    row = schedule(engine, "every-minute")
    with engine.begin() as conn:
        first = schedules.enqueue_due(conn, settings, limit=10)
        conn.execute(text("UPDATE job_schedules SET next_run_at = :slot"), {"slot": row["next_run_at"]})
        second = schedules.enqueue_due(conn, settings, limit=10)
    assert (first.enqueued, second.enqueued, second.duplicates) == (1, 0, 1)
    assert len(fetch_jobs(engine)) == 1


def test_unknown_type_is_skipped_and_counted_and_the_schedule_moves_on(app, engine, settings):
    add(engine, job_type="no.such.type")
    assert Scheduler(engine, settings).run_once() == SchedulerResult(invalid=1)
    assert fetch_jobs(engine) == [] and schedule(engine, "every-minute")["next_run_at"] > datetime.now(timezone.utc)


def test_bad_cron_written_by_hand_disables_the_schedule(app, engine, settings):
    add(engine, cron="not a cron")
    Scheduler(engine, settings).run_once()
    assert schedule(engine, "every-minute")["enabled"] is False


def test_no_schedule_due_adds_no_statement_to_the_claim(app, engine, settings):
    add(engine, name="future", due_seconds_ago=-3600)
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        process_pending(engine, settings, limit=10, budget_s=10, app=app)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1, statements  # the claim alone: it asks whether a schedule is due
    assert "FROM job_schedules" in statements[0] and "jobs_fair_claim" in statements[0]


def test_due_query_can_use_its_index(engine):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + schedules.DUE_SCHEDULES), {"limit": 10}))
    assert "job_schedules_due_idx" in plan


def test_cli_add_list_disable_enable_remove(app, engine):
    runner = app.test_cli_runner()
    added = runner.invoke(args=["jobs", "schedule", "add", "nightly", "30 2 * * *", "test.echo",
                                "--payload", '{"a": 1}', "--priority", "low"])
    assert added.exit_code == 0, added.output
    row = json.loads(added.output)
    assert row["cron"] == "30 2 * * *" and row["priority"] == 10 and row["enabled"] is True
    assert row["next_run_at"].endswith("02:30:00+00:00")
    listed = runner.invoke(args=["jobs", "schedule", "list"])
    assert "nightly" in listed.output and "30 2 * * *" in listed.output
    assert runner.invoke(args=["jobs", "schedule", "disable", "nightly"]).exit_code == 0
    assert schedule(engine, "nightly")["enabled"] is False
    with engine.begin() as conn:  # a stale slot from long ago ...
        conn.execute(text("UPDATE job_schedules SET next_run_at = now() - interval '7 days'"))
    assert runner.invoke(args=["jobs", "schedule", "enable", "nightly"]).exit_code == 0
    assert schedule(engine, "nightly")["next_run_at"] > datetime.now(timezone.utc)  # ... is not fired on enable
    assert runner.invoke(args=["jobs", "schedule", "remove", "nightly"]).exit_code == 0
    assert runner.invoke(args=["jobs", "schedule", "list"]).output.strip() == "No schedules."


def test_cli_refuses_bad_input(app, engine):
    runner = app.test_cli_runner()
    bad_cron = runner.invoke(args=["jobs", "schedule", "add", "x", "61 * * * *", "test.echo"])
    assert bad_cron.exit_code != 0 and "minute: 61 is outside 0-59" in bad_cron.output
    bad_type = runner.invoke(args=["jobs", "schedule", "add", "x", "* * * * *", "no.such.type"])
    assert bad_type.exit_code != 0 and "unknown job type" in bad_type.output
    assert runner.invoke(args=["jobs", "schedule", "add", "x", "* * * * *", "test.echo"]).exit_code == 0
    duplicate = runner.invoke(args=["jobs", "schedule", "add", "x", "* * * * *", "test.echo"])
    assert duplicate.exit_code != 0 and "exists already" in duplicate.output
    for args in (["x2", "\u00b2 * * * *", "test.echo"], ["x2", "* * * * *", "test.echo", "--priority", "\u00b2"],
                 ["x2", "* * * * *", "test.echo", "--payload", "[1]"], ["x2", "*/\u0661 * * * *", "test.echo"]):
        refused = runner.invoke(args=["jobs", "schedule", "add", *args])
        # a clean click error (exit 1 or 2 with a message), never an exception escaping with a traceback
        assert refused.exit_code in (1, 2) and isinstance(refused.exception, SystemExit), (args, refused.output)
        assert "Error" in refused.output and "Traceback" not in refused.output
    missing = runner.invoke(args=["jobs", "schedule", "disable", "nope"])
    assert missing.exit_code != 0 and "no schedule named" in missing.output


def test_shipped_cleanup_schedule_enqueues_system_cleanup(app, engine, settings):
    from jobprocessor.sqlfiles import read_sql_file

    with engine.begin() as conn:  # the shipped row, as the sql file inserts it
        insert = read_sql_file("053_job_schedules_v1.sql")
        conn.execute(text(insert[insert.index("INSERT INTO job_schedules"):insert.index("ON CONFLICT")]))
    row = schedule(engine, "system.cleanup")
    assert (row["cron"], row["job_type"], row["enabled"]) == ("0 3 * * *", "system.cleanup", True)
    assert (row["next_run_at"].hour, row["next_run_at"].minute) == (3, 0)
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_schedules SET next_run_at = now() - interval '1 minute'"))
    summary = process_pending(engine, settings, limit=10, budget_s=20, app=app)
    assert summary.succeeded == 1
    job, = fetch_jobs(engine)
    assert job["type"] == "system.cleanup" and job["result"]["done"] is True
