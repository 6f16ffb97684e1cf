"""Batches: POST /jobs creates a whole batch in one request; GET /batches/<id> counts it per status, from one query
on jobs_batch_idx."""
from sqlalchemy import text

from jobprocessor import queries
from tests.support.db import insert_jobs
from tests.support.settings import AUTH


def batch(client, batch_id):
    return client.get(f"/batches/{batch_id}", headers=AUTH)


def test_a_batch_in_one_request_and_its_progress(client):
    jobs = [{"type": "test.echo", "payload": {"n": i}, "store_id": f"s{i % 7}", "batch_id": "optimize-500"}
            for i in range(500)]
    response = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 201, response.json
    assert response.json["created"] == 500 and len(set(response.json["ids"])) == 500
    body = batch(client, "optimize-500").json
    assert body == {"batch_id": "optimize-500", "total": 500, "finished": 0, "progress": 0.0, "done": False,
                    "counts": {"waiting": 0, "pending": 500, "running": 0, "completed": 0, "failed": 0,
                               "cancelled": 0},
                    "on_complete": None}

    summary = client.post("/process-pending", json={"limit": 100}, headers=AUTH).json
    assert summary["succeeded"] == 100 and len(summary["stores"]) == 7  # fair: every store got some
    cancelled = client.post(f"/jobs/{response.json['ids'][-1]}/cancel", headers=AUTH)
    assert cancelled.status_code == 200, cancelled.json
    body = batch(client, "optimize-500").json
    assert body["counts"] == {"waiting": 0, "pending": 399, "running": 0, "completed": 100, "failed": 0,
                              "cancelled": 1}
    assert body["finished"] == 101 and body["progress"] == 101 / 500 and not body["done"]

    while client.post("/process-pending", json={"limit": 1000}, headers=AUTH).json["claimed"]:
        pass
    body = batch(client, "optimize-500").json
    assert body["progress"] == 1.0 and body["done"] and body["counts"]["completed"] == 499


def test_failed_jobs_count_as_finished(client):
    response = client.post("/jobs", json={"jobs": [{"type": "test.permanent", "batch_id": "b"},
                                                   {"type": "test.echo", "batch_id": "b"},
                                                   {"type": "test.echo", "batch_id": "other"}]}, headers=AUTH)
    assert response.status_code == 201
    client.post("/process-pending", json={"limit": 10}, headers=AUTH)
    body = batch(client, "b").json
    assert body["total"] == 2 and body["counts"]["failed"] == 1 and body["counts"]["completed"] == 1
    assert body["progress"] == 1.0 and body["done"]


def test_unknown_bad_or_unauthenticated(client):
    missing = batch(client, "nope")
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    too_long = batch(client, "x" * 201)
    assert too_long.status_code == 400 and too_long.json["error"] == "invalid_parameter"
    anonymous = client.get("/batches/nope")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_batch_request_is_all_or_nothing_and_bounded(client, engine):
    jobs = [{"type": "test.echo", "batch_id": "b"}] * 3 + [{"type": "test.echo", "batch_id": 7}]
    response = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "jobs[3].batch_id"
    response = client.post("/jobs", json={"jobs": [{"type": "test.echo", "batch_id": "b"}] * 1001}, headers=AUTH)
    assert response.status_code == 400
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0


def test_the_counts_come_from_jobs_batch_idx(clean_db):
    engine = clean_db
    insert_jobs(engine, 20000, batch_id="'batch-' || (g % 400)", store_id="'s' || (g % 13)")
    with engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        plan = "\n".join(conn.execute(text("EXPLAIN " + queries.BATCH_COUNTS), {"batch_id": "batch-7"}).scalars())
        assert "jobs_batch_idx" in plan, plan
        assert queries.batch_counts(conn, "batch-7") == {"pending": 50}
