"""job_queue_health and job_queue_alerts (sql/052), GET /queue/health and `flask jobs health`."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.support.db import insert_jobs
from tests.support.settings import AUTH


def health_rows(engine):
    with engine.connect() as conn:
        return {row["status"]: row for row in conn.execute(text("SELECT * FROM job_queue_health")).mappings()}


def alerts(engine):
    with engine.connect() as conn:
        return {row["alert"]: row for row in conn.execute(text("SELECT * FROM job_queue_alerts")).mappings()}


def set_thresholds(engine, **values):
    with engine.begin() as conn:
        for column, value in values.items():
            conn.execute(text(f"UPDATE job_queue_alert_settings SET {column} = :v"), {"v": value})


def test_health_counts_live_jobs_of_any_age_and_finished_of_the_last_day(clean_db):
    insert_jobs(clean_db, 3, created_at="now() - interval '3 days'")  # pending, old: counted
    insert_jobs(clean_db, 2, status="'running'", started_at="now() - interval '10 seconds'",
                locked_until="now() + interval '5 minutes'")
    insert_jobs(clean_db, 4, status="'completed'", created_at="now() - interval '1 hour'",
                started_at="now() - interval '30 seconds'", completed_at="now() - interval '28 seconds'")
    insert_jobs(clean_db, 5, status="'completed'", created_at="now() - interval '3 days'",
                started_at="now() - interval '3 days'", completed_at="now() - interval '2 days'")  # too old
    # created two days ago, failed a minute ago: counted
    insert_jobs(clean_db, 1, status="'failed'", created_at="now() - interval '2 days'",
                started_at="now() - interval '2 minutes'", completed_at="now() - interval '1 minute'")
    rows = health_rows(clean_db)
    assert list(rows) == ["waiting", "pending", "running", "completed", "failed", "cancelled"]
    assert {s: r["count"] for s, r in rows.items()} == \
        {"waiting": 0, "pending": 3, "running": 2, "completed": 4, "failed": 1, "cancelled": 0}
    assert 3 * 86400 - 5 < rows["pending"]["oldest_age_seconds"] < 3 * 86400 + 60
    assert rows["pending"]["avg_duration_seconds"] is None
    assert 9 < rows["running"]["avg_duration_seconds"] < 70
    assert abs(rows["completed"]["avg_duration_seconds"] - 2) < 0.01
    assert abs(rows["failed"]["avg_duration_seconds"] - 60) < 0.01
    assert rows["cancelled"]["oldest_created_at"] is None


def test_quiet_queue_fires_nothing(clean_db):
    insert_jobs(clean_db, 5)
    insert_jobs(clean_db, 50, status="'completed'", started_at="now()", completed_at="now()")
    assert alerts(clean_db) == {}


def test_backlog_warning_then_critical(clean_db):
    set_thresholds(clean_db, backlog_warning=10, backlog_critical=20)
    insert_jobs(clean_db, 12)
    insert_jobs(clean_db, 50, run_at="now() + interval '1 hour'")  # not due: not backlog
    alert = alerts(clean_db)["backlog"]
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("warning", 12, 10)
    assert "12 jobs are due and waiting" in alert["message"]
    insert_jobs(clean_db, 8)
    alert = alerts(clean_db)["backlog"]
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("critical", 20, 20)


def test_pending_too_old_counts_from_run_at(clean_db):
    insert_jobs(clean_db, 1, created_at="now() - interval '2 days'", run_at="now() - interval '1 minute'")
    assert "pending_too_old" not in alerts(clean_db)  # created long ago, due only a minute ago: not late
    insert_jobs(clean_db, 1, run_at="now() - interval '6 minutes'")
    alert = alerts(clean_db)["pending_too_old"]
    assert alert["severity"] == "warning" and 359 < alert["value"] < 400
    insert_jobs(clean_db, 1, run_at="now() - interval '2 hours'")
    assert alerts(clean_db)["pending_too_old"]["severity"] == "critical"


def test_running_past_lease(clean_db):
    insert_jobs(clean_db, 1, status="'running'", started_at="now()", locked_until="now() - interval '30 seconds'")
    assert "running_past_lease" not in alerts(clean_db)  # inside the grace: the next call rescues it
    insert_jobs(clean_db, 2, status="'running'", started_at="now()", locked_until="now() - interval '2 minutes'",
                locked_by="'host:1:abc'")
    alert = alerts(clean_db)["running_past_lease"]
    assert alert["severity"] == "warning" and alert["value"] == 2 and "cron" in alert["message"]
    insert_jobs(clean_db, 1, status="'running'", started_at="now()", locked_until="now() - interval '1 hour'")
    assert alerts(clean_db)["running_past_lease"]["severity"] == "critical"


def test_failure_rate_of_the_last_hour(clean_db):
    finished = dict(started_at="now()", completed_at="now() - interval '10 minutes'")
    insert_jobs(clean_db, 17, status="'completed'", **finished)
    insert_jobs(clean_db, 2, status="'failed'", **finished)
    insert_jobs(clean_db, 100, status="'failed'", started_at="now()", completed_at="now() - interval '2 hours'")
    assert "failure_rate" not in alerts(clean_db)  # 19 jobs in the hour: below failure_rate_min_jobs (20)
    insert_jobs(clean_db, 1, status="'failed'", **finished)
    alert = alerts(clean_db)["failure_rate"]
    assert (alert["severity"], float(alert["value"])) == ("warning", 0.15)
    assert "3 of the 20 jobs finished in the last hour failed" in alert["message"]
    insert_jobs(clean_db, 20, status="'failed'", **finished)
    assert alerts(clean_db)["failure_rate"]["severity"] == "critical"


def test_missing_settings_row_is_itself_an_alert(clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM job_queue_alert_settings"))
    try:
        assert alerts(clean_db)["alert_settings_missing"]["severity"] == "critical"
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO job_queue_alert_settings DEFAULT VALUES"))


def test_thresholds_are_checked(clean_db):
    with pytest.raises(IntegrityError):
        set_thresholds(clean_db, failure_rate_warning=1.5)
    with pytest.raises(IntegrityError):
        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO job_queue_alert_settings (singleton) VALUES (false)"))


def test_get_queue_health(client, engine):
    set_thresholds(engine, backlog_warning=2, backlog_critical=100)
    insert_jobs(engine, 3)
    assert client.get("/queue/health").status_code == 401
    body = client.get("/queue/health", headers=AUTH).json
    assert body["status"] == "warning"
    assert [row["status"] for row in body["health"]] == ["waiting", "pending", "running", "completed", "failed",
                                                         "cancelled"]
    assert body["health"][1]["count"] == 3 and isinstance(body["health"][1]["oldest_age_seconds"], (int, float))
    assert [a["alert"] for a in body["alerts"]] == ["backlog"]
    set_thresholds(engine, backlog_warning=1000, backlog_critical=10000)


def test_flask_jobs_health(app, engine):
    insert_jobs(engine, 2)
    runner = app.test_cli_runner()
    table = runner.invoke(args=["jobs", "health"])
    assert table.exit_code == 0, table.output
    assert "pending" in table.output and "No alerts firing." in table.output and "status: ok" in table.output
    as_json = json.loads(runner.invoke(args=["jobs", "health", "--json"]).output)
    assert as_json["health"][1] == {**as_json["health"][1], "status": "pending", "count": 2}
