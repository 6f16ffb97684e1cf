"""Each index of sql/050 serves the query it names: with sequential scans off, that query's plan uses it (on a
small test table the planner would otherwise rightly prefer a scan; this proves the index fits the query's shape)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from jobprocessor import queries

LIST_PARAMS = dict(status=None, job_type=None, store_id=None, user_id=None, batch_id=None, after=None, limit=51)


def plan(engine, sql, params=None):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params or {}))


@pytest.fixture
def realistic_jobs(clean_db):
    """20,000 jobs over 200 stores, 50 users, 5 types and every status, analysed: on a nearly empty table several
    indexes cost the same and the planner's pick among them says nothing about which one fits the query."""
    with clean_db.begin() as conn:
        conn.execute(text("""
            INSERT INTO jobs (type, status, store_id, user_id, completed_at)
            SELECT 'type-' || (g % 5),
                   (ARRAY['pending', 'running', 'completed', 'failed', 'cancelled'])[1 + g % 5],
                   's' || (g % 200), 'u' || (g % 50),
                   CASE WHEN g % 5 IN (2, 3, 4) THEN now() - g * interval '1 second' END
            FROM generate_series(1, 20000) AS g"""))
        conn.execute(text("ANALYZE jobs"))
    return clean_db


@pytest.mark.parametrize("filters, index", [
    ({"job_type": "test.echo", "status": "failed"}, "jobs_type_status_idx"),
    ({"store_id": "s1", "status": "pending"}, "jobs_store_status_idx"),
    ({"user_id": "u1", "store_id": "s1", "status": "completed"}, "jobs_user_store_status_idx"),
])
def test_list_jobs_filters_use_their_index(realistic_jobs, filters, index):
    assert index in plan(realistic_jobs, queries.LIST_JOBS, {**LIST_PARAMS, **filters})


def test_cleanup_batches_use_the_finished_index(clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("LOAD 'auto_explain'"))
        conn.execute(text("SET LOCAL auto_explain.log_min_duration = 0"))
        conn.execute(text("SET LOCAL auto_explain.log_nested_statements = on"))
        conn.execute(text("SET LOCAL client_min_messages = log"))
        conn.execute(text("SET LOCAL auto_explain.log_level = notice"))
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("SELECT * FROM cleanup_old_jobs('30 days', '90 days', 100, 1)")
        notices = "".join(conn.connection.dbapi_connection.notices)
    assert notices.count("jobs_finished_idx") >= 2, notices  # the completed batch and the failed batch


# partial indexes over pending jobs only (the claim's and the fair claim's): any of them reads just the pending rows
PENDING_INDEXES = ("jobs_claim_idx", "jobs_fair_idx", "jobs_fair_type_idx")


def test_views_use_partial_indexes(clean_db):
    for view in ("job_queue_health", "job_queue_alerts"):
        text_plan = plan(clean_db, f"SELECT * FROM {view}")
        assert any(index in text_plan for index in PENDING_INDEXES), text_plan
        for index in ("jobs_running_lease_idx", "jobs_finished_idx"):
            assert index in text_plan, (view, text_plan)


def test_user_id_filter_on_the_api(client, engine):
    from tests.conftest import AUTH, insert_jobs

    insert_jobs(engine, 2, user_id="'u1'", store_id="'s1'")
    insert_jobs(engine, 1, user_id="'u2'", store_id="'s1'")
    body = client.get("/jobs?user_id=u1&store_id=s1", headers=AUTH).json
    assert [job["user_id"] for job in body["jobs"]] == ["u1", "u1"]
