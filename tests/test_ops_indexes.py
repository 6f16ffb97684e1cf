"""Each index of sql/050 serves the query it names: with sequential scans off, that query's plan uses it (on a
small test table the planner would otherwise rightly prefer a scan; this proves the index fits the query's shape)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from jobprocessor import queries
from tests.support.plans import LIST_PARAMS, plan


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


LIVE = ("pending", "running")
FINISHED = ("completed", "failed", "cancelled")
DASHBOARD_FILTERS = {
    "jobs_type_status": {"job_type": "test.echo"},  # a rare type: the index is the right plan
    "jobs_store_status": {"store_id": "s1"},
    "jobs_user_store_status": {"user_id": "u1", "store_id": "s1"},
}


# sql/055 split each dashboard index of sql/050 into a live half and a finished half: every status filter of GET /jobs
# must still be served by one of them (the planner proves the status implies the index's predicate)
@pytest.mark.parametrize("status", LIVE + FINISHED)
@pytest.mark.parametrize("family", DASHBOARD_FILTERS)
def test_list_jobs_filters_use_their_index(realistic_jobs, family, status):
    index = f"{family}_{'live' if status in LIVE else 'finished'}_idx"
    assert index in plan(realistic_jobs, queries.LIST_JOBS, {**LIST_PARAMS, **DASHBOARD_FILTERS[family],
                                                              "status": status})


@pytest.mark.parametrize("family", ["jobs_store_status", "jobs_user_store_status"])
def test_list_jobs_without_status_reads_both_halves(realistic_jobs, family):
    """No status filter: a store's or a user's jobs come from both halves of the split index, not from a scan of the
    table (the whole-history index of sql/050 served this as a prefix of its key)."""
    text_plan = plan(realistic_jobs, queries.LIST_JOBS, {**LIST_PARAMS, **DASHBOARD_FILTERS[family]})
    assert f"{family}_live_idx" in text_plan and f"{family}_finished_idx" in text_plan, text_plan


def test_whole_history_dashboard_indexes_are_gone(engine):
    with engine.connect() as conn:
        names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).scalars())
    assert not names & {"jobs_type_status_idx", "jobs_store_status_idx", "jobs_user_store_status_idx"}
    assert {f"{family}_{half}_idx" for family in DASHBOARD_FILTERS for half in ("live", "finished")} <= names


def _leaf_entries(conn, index: str) -> int:
    """Index entries (live and dead alike: what a write put there), counted on the leaf pages with pageinspect."""
    return conn.execute(text("""
        SELECT coalesce(sum(s.live_items + s.dead_items), 0)
        FROM generate_series(1, (pg_relation_size(CAST(:index AS regclass)) / 8192)::int - 1) AS b,
             LATERAL bt_page_stats(:index, b) AS s
        WHERE s.type = 'l'"""), {"index": index}).scalar_one()


def test_the_claim_writes_only_to_the_live_halves(clean_db):
    """What the split is for: a job's pending and running versions go to the small live indexes only, its final
    version to the finished ones only, so the claim never writes to an index that grows with history."""
    from tests.support.db import insert_jobs

    insert_jobs(clean_db, 30, store_id="'s1'", user_id="'u1'")
    indexes = [f"{family}_{half}_idx" for family in DASHBOARD_FILTERS for half in ("live", "finished")]
    with clean_db.connect() as conn:
        trans = conn.begin()  # pageinspect only for this test: the extension is rolled back with it
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))

        def entries():
            return {name: _leaf_entries(conn, name) for name in indexes}

        assert entries() == {name: (30 if "_live_" in name else 0) for name in indexes}
        claimed = queries.claim(conn, limit=30, worker="w", lease_s=60)
        assert len(claimed.jobs) == 30
        assert entries() == {name: (60 if "_live_" in name else 0) for name in indexes}
        queries.finish(conn, "w", [queries.Outcome(job["id"], "completed", result_json="{}") for job in claimed.jobs])
        assert entries() == {name: (60 if "_live_" in name else 30) for name in indexes}
        trans.rollback()


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
    from tests.support.db import insert_jobs
    from tests.support.settings import AUTH

    insert_jobs(engine, 2, user_id="'u1'", store_id="'s1'")
    insert_jobs(engine, 1, user_id="'u2'", store_id="'s1'")
    body = client.get("/jobs?user_id=u1&store_id=s1", headers=AUTH).json
    assert [job["user_id"] for job in body["jobs"]] == ["u1", "u1"]
