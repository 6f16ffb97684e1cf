"""cleanup_old_jobs() (sql/051), its batched maintenance path, the system.cleanup handler and `flask jobs cleanup`."""
from __future__ import annotations

import dataclasses
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from jobprocessor import queries
from jobprocessor.maintenance.cleaner import Cleaner, CleanerConfig
from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs, insert_jobs


def finished(engine, n, status, days_ago, **columns):
    """n finished jobs, finished `days_ago` days ago."""
    return insert_jobs(engine, n, status=f"'{status}'", started_at=f"now() - interval '{days_ago} days' - "
                                                                 "interval '2 seconds'",
                       completed_at=f"now() - interval '{days_ago} days'", **columns)


def cleanup(conn, completed="30 days", failed="90 days", batch_size=10000, max_batches=None):
    return conn.execute(text("SELECT * FROM cleanup_old_jobs(CAST(:c AS interval), CAST(:f AS interval), :b, :m)"),
                        {"c": completed, "f": failed, "b": batch_size, "m": max_batches}).mappings().one()


def test_moves_old_completed_deletes_old_failed_and_cancelled_keeps_the_rest(clean_db):
    old_completed = finished(clean_db, 5, "completed", 31, result="'{\"ok\": true}'", store_id="'s1'")
    recent_completed = finished(clean_db, 3, "completed", 29)
    old_failed = finished(clean_db, 4, "failed", 91, last_error="'boom'")
    old_cancelled = finished(clean_db, 2, "cancelled", 91)
    kept_failed = finished(clean_db, 2, "failed", 31)  # failed jobs are kept 90 days
    pending = insert_jobs(clean_db, 3, created_at="now() - interval '400 days'")
    with clean_db.begin() as conn:
        counts = cleanup(conn)
    assert dict(counts) == {"archived": 5, "deleted": 6, "batches": 1, "done": True}
    remaining = {row["id"] for row in fetch_jobs(clean_db)}
    assert remaining == set(recent_completed + kept_failed + pending)
    with clean_db.connect() as conn:
        archived = conn.execute(text("SELECT * FROM jobs_archive ORDER BY id")).mappings().all()
    assert [row["id"] for row in archived] == old_completed
    assert archived[0]["result"] == {"ok": True} and archived[0]["store_id"] == "s1"
    assert archived[0]["status"] == "completed" and archived[0]["archived_at"] is not None
    assert not set(old_failed + old_cancelled) & remaining


def test_batches_and_max_batches(clean_db):
    finished(clean_db, 25, "completed", 40)
    finished(clean_db, 12, "failed", 100)
    with clean_db.begin() as conn:
        first = cleanup(conn, batch_size=10, max_batches=1)
    assert dict(first) == {"archived": 10, "deleted": 10, "batches": 1, "done": False}
    with clean_db.begin() as conn:
        rest = cleanup(conn, batch_size=10)
    assert dict(rest) == {"archived": 15, "deleted": 2, "batches": 2, "done": True}
    assert fetch_jobs(clean_db) == []


def archive(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM jobs_archive ORDER BY id")).mappings().all()


def test_every_batch_archives_its_old_completed_jobs(clean_db):
    """One call of several batches (25 old completed jobs, batches of 10): every one of them is in jobs_archive,
    whole -- not only those of the first batch (the later ones deleted unarchived would still count as archived)."""
    old = finished(clean_db, 25, "completed", 40, result="'{\"n\": 1}'", store_id="'s' || g")
    with clean_db.begin() as conn:
        counts = cleanup(conn, batch_size=10)
    assert dict(counts) == {"archived": 25, "deleted": 0, "batches": 3, "done": True}
    stored = archive(clean_db)
    assert [row["id"] for row in stored] == old and fetch_jobs(clean_db) == []
    assert {(row["status"], row["result"]["n"]) for row in stored} == {("completed", 1)}
    assert [row["store_id"] for row in stored] == [f"s{g}" for g in range(1, 26)]


def test_the_cleaner_archives_every_batch(clean_db, settings):
    """The maintenance path, one batch per transaction: 250 old completed jobs in batches of 100 all end in
    jobs_archive; the old failed ones are deleted, not archived."""
    old = finished(clean_db, 250, "completed", 40)
    finished(clean_db, 120, "failed", 100)
    report = cleaner(clean_db, settings, batch_size=100).run_once(budget_s=60)
    assert (report.archived, report.deleted, report.batches, report.done) == (250, 120, 3, True)
    assert [row["id"] for row in archive(clean_db)] == old and fetch_jobs(clean_db) == []


def test_bad_arguments_are_refused(clean_db):
    with clean_db.connect() as conn:
        with pytest.raises(Exception, match="batch_size must be at least 1"):
            cleanup(conn, batch_size=0)
    with clean_db.connect() as conn:
        with pytest.raises(Exception, match="not negative"):
            cleanup(conn, completed="-1 day")


def test_rows_another_transaction_holds_are_skipped_not_waited_for(clean_db):
    ids = finished(clean_db, 6, "completed", 40)
    with clean_db.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM jobs WHERE id = ANY(:ids) FOR UPDATE"), {"ids": ids[:2]})
        with clean_db.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            counts = cleanup(conn)
        holder.rollback()
    assert counts["archived"] == 4
    assert [row["id"] for row in fetch_jobs(clean_db)] == ids[:2]


def cleaner(engine, settings, **overrides) -> Cleaner:
    return Cleaner(engine, CleanerConfig.from_settings(settings, **overrides))


def test_the_cleaner_config_is_validated():
    for bad in (dict(batch_size=99), dict(batch_size=True), dict(statement_timeout_s=0),
                dict(completed_older_than=timedelta(days=-1)), dict(failed_older_than=3),
                dict(action_log=timedelta(days=-1))):
        fields = {"completed_older_than": timedelta(days=30), "failed_older_than": timedelta(days=90), **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            CleanerConfig(**fields)


def test_the_cleaner_commits_each_batch_in_its_own_transaction(clean_db, settings):
    finished(clean_db, 2500, "completed", 40)
    seen = []
    stop = threading.Event()

    def watch():  # a separate connection sees the archive grow between batches: each batch committed alone
        with clean_db.connect() as conn:
            while not stop.is_set():
                seen.append(conn.execute(text("SELECT count(*) FROM jobs_archive")).scalar_one())
                conn.commit()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = cleaner(clean_db, settings, batch_size=100).run_once(budget_s=60)
    finally:
        stop.set()
        watcher.join()
    assert report.archived == 2500 and report.batches == 26 and report.done
    intermediate = {n for n in seen if 0 < n < 2500}
    assert intermediate and all(n % 100 == 0 for n in intermediate)


def test_a_batch_past_its_statement_timeout_rolls_back_whole(clean_db):
    finished(clean_db, 30000, "completed", 40)
    with pytest.raises(OperationalError) as caught, clean_db.begin() as conn:
        queries.cleanup_batch(conn, completed_older_than=timedelta(days=30), failed_older_than=timedelta(days=90),
                              batch_size=30000, statement_timeout_s=0.001)
    assert caught.value.orig.pgcode == "57014"
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 30000
        assert conn.execute(text("SELECT count(*) FROM jobs_archive")).scalar_one() == 0


def test_the_cleaner_respects_max_batches_and_budget(clean_db, settings):
    finished(clean_db, 500, "completed", 40)
    report = cleaner(clean_db, settings, batch_size=100).run_once(budget_s=60, max_batches=2)
    assert (report.archived, report.batches, report.done) == (200, 2, False)
    nothing = cleaner(clean_db, settings, batch_size=100).run_once(budget_s=0.1)
    assert (nothing.archived, nothing.batches, nothing.done) == (0, 0, False)


def test_the_action_log_keeps_its_retention_and_the_bulk_actions_still_running(clean_db, settings):
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE job_actions"))
        ids = conn.execute(text("""
            INSERT INTO job_actions (at, finished_at, actor, role, action, status)
            VALUES (now() - interval '40 days', now() - interval '40 days', 'api', 'api', 'limit.put', 'done'),
                   (now() - interval '40 days', now() - interval '40 days', 'cli', 'u', 'bulk.retry', 'failed'),
                   (now() - interval '29 days', now() - interval '29 days', 'api', 'api', 'pause.add', 'done'),
                   (now() - interval '30 days 12 hours', NULL, 'dashboard', 'admin', 'bulk.cancel', 'running'),
                   (now() - interval '32 days', NULL, 'dashboard', 'admin', 'bulk.retry', 'running')
            RETURNING id""")).scalars().all()
    report = Cleaner(clean_db, CleanerConfig.from_settings(
        dataclasses.replace(settings, JOBS_ACTION_LOG_DAYS=30))).run_once(budget_s=30)
    assert report.actions_deleted == 3
    with clean_db.connect() as conn:
        kept = conn.execute(text("SELECT id FROM job_actions ORDER BY id")).scalars().all()
    # the recent entry, and the bulk action running since within a day past the retention (one running since
    # before that is taken for dead: its process stopped without marking it)
    assert kept == ids[2:4]


def test_system_cleanup_job_runs_the_cleanup_and_reports_counts(app, engine, settings):
    finished(engine, 30, "completed", 40)
    finished(engine, 7, "failed", 100)
    insert_jobs(engine, 1, job_type="system.cleanup", payload="'{\"batch_size\": 100}'")
    summary = process_pending(engine, settings, limit=5, budget_s=30, app=app)
    assert summary.succeeded == 1
    job, = fetch_jobs(engine, "type = 'system.cleanup'")
    assert job["status"] == "completed"
    assert {k: job["result"][k] for k in ("archived", "deleted", "batches", "done")} == \
        {"archived": 30, "deleted": 7, "batches": 1, "done": True}


def test_system_cleanup_continues_later_when_its_budget_runs_out(app, engine, settings):
    finished(engine, 30, "completed", 40)
    (job_id,) = insert_jobs(engine, 1, job_type="system.cleanup")
    summary = process_pending(engine, settings, limit=5, budget_s=1, app=app)  # no time for a single batch
    assert summary.retried == 1
    job, = fetch_jobs(engine, "id = :id", id=job_id)
    assert job["status"] == "pending" and job["attempts"] == 0 and "cleanup continues" in job["last_error"]


def test_system_cleanup_rejects_a_bad_payload(app, engine, settings):
    insert_jobs(engine, 1, job_type="system.cleanup", payload="'{\"completed_older_than_days\": \"soon\"}'")
    process_pending(engine, settings, limit=5, budget_s=10, app=app)
    job, = fetch_jobs(engine)
    assert job["status"] == "failed" and "completed_older_than_days" in job["last_error"]


def test_flask_jobs_cleanup(app, engine):
    finished(engine, 12, "completed", 11)
    finished(engine, 3, "failed", 11)
    result = app.test_cli_runner().invoke(args=["jobs", "cleanup", "--completed-days", "10", "--failed-days", "10",
                                                "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    assert {k: v for k, v in json.loads(result.output).items() if k in ("archived", "deleted", "done")} == \
        {"archived": 12, "deleted": 3, "done": True}


def test_flask_jobs_cleanup_honours_zero_days(app, engine):
    """0 days means everything finished until now, not the 30/90-day defaults (timedelta(0) is falsy)."""
    finished(engine, 4, "completed", 0.001)
    finished(engine, 2, "cancelled", 0.001)
    kept = insert_jobs(engine, 1)  # pending: never touched
    result = app.test_cli_runner().invoke(args=["jobs", "cleanup", "--completed-days", "0", "--failed-days", "0"])
    assert result.exit_code == 0, result.output
    assert {k: v for k, v in json.loads(result.output).items() if k in ("archived", "deleted")} == \
        {"archived": 4, "deleted": 2}
    assert [job["id"] for job in fetch_jobs(engine)] == kept
