"""The job API over the Flask test client: enqueue (one, many, idempotent), list pages, read, retry, cancel."""
import pytest
from sqlalchemy import event

from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH


def post_jobs(client, body):
    return client.post("/jobs", json=body, headers=AUTH)


def test_enqueue_one_with_every_field(client, engine):
    response = post_jobs(client, {
        "type": "test.echo", "payload": {"sku": "A-1", "nested": {"x": [1, 2]}}, "priority": "urgent",
        "run_at": "2030-01-31T09:30:00Z", "store_id": "store-1", "user_id": "u-9", "max_attempts": 7,
        "idempotency_key": "k-1", "batch_id": "b-1"})
    assert response.status_code == 201
    job = response.json["job"]
    assert (job["priority"], job["status"], job["max_attempts"], job["attempts"]) == (1, "pending", 7, 0)
    assert job["run_at"].startswith("2030-01-31T09:30:00")
    assert (job["store_id"], job["user_id"], job["idempotency_key"], job["batch_id"]) == \
        ("store-1", "u-9", "k-1", "b-1")
    assert job["payload"] == {"sku": "A-1", "nested": {"x": [1, 2]}}


def test_defaults_come_from_the_handler(client):
    job = post_jobs(client, {"type": "test.echo"}).json["job"]
    assert (job["priority"], job["max_attempts"], job["payload"]) == (5, 3, {})


@pytest.mark.parametrize("name,value", [("priority", "urgent"), ("priority", "high"), ("priority", "normal"),
                                        ("priority", "low"), ("priority", 3)])
def test_priority_names_and_numbers(client, name, value):
    expected = {"urgent": 1, "high": 2, "normal": 5, "low": 10}.get(value, value)
    assert post_jobs(client, {"type": "test.echo", name: value}).json["job"]["priority"] == expected


def test_repeat_idempotency_key_returns_the_existing_job(client, engine):
    first = post_jobs(client, {"type": "test.echo", "idempotency_key": "once", "payload": {"n": 1}})
    again = post_jobs(client, {"type": "test.echo", "idempotency_key": "once", "payload": {"n": 2}})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"] and again.json["created"] is False
    assert again.json["job"]["payload"] == {"n": 1}
    assert len(fetch_jobs(engine)) == 1


def test_batch_of_jobs_in_one_request(client, engine):
    jobs = [{"type": "test.echo", "payload": {"i": i}, "store_id": f"s{i % 3}", "batch_id": "b"} for i in range(1000)]
    jobs[10]["idempotency_key"] = "dup"
    jobs[20]["idempotency_key"] = "dup"  # the same key twice in one request: one job
    response = post_jobs(client, {"jobs": jobs})
    assert response.status_code == 201
    assert (response.json["created"], response.json["duplicates"]) == (999, 1)
    ids = response.json["ids"]
    assert ids[10] == ids[20] and len(set(ids)) == 999
    stored = {j["id"]: j["payload"]["i"] for j in fetch_jobs(engine)}
    # every id maps back to the job at its position in the request
    assert all(stored[job_id] == i for i, job_id in enumerate(ids) if i != 20)


def test_batch_repeat_enqueues_nothing(client, engine):
    jobs = [{"type": "test.echo", "idempotency_key": f"k{i}"} for i in range(5)]
    first = post_jobs(client, {"jobs": jobs})
    again = post_jobs(client, {"jobs": jobs})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["ids"] == first.json["ids"] and again.json["created"] == 0
    assert len(fetch_jobs(engine)) == 5


@pytest.mark.parametrize("body,field", [
    ({"type": "test.echo", "priority": 0}, "priority"),
    ({"type": "test.echo", "priority": 11}, "priority"),
    ({"type": "test.echo", "priority": "asap"}, "priority"),
    ({"type": "test.echo", "priority": True}, "priority"),
    ({"type": "test.echo", "run_at": "tomorrow"}, "run_at"),
    ({"type": "test.echo", "run_at": 12345}, "run_at"),
    ({"type": "test.echo", "max_attempts": 0}, "max_attempts"),
    ({"type": "test.echo", "max_attempts": 101}, "max_attempts"),
    ({"type": "test.echo", "max_attempts": "3"}, "max_attempts"),
    ({"type": "test.echo", "payload": [1, 2]}, "payload"),
    ({"type": "test.echo", "payload": {"s": "nul\u0000byte"}}, "payload"),
    ({"type": "test.echo", "store_id": ""}, "store_id"),
    ({"type": "test.echo", "store_id": 42}, "store_id"),
    ({"type": "test.echo", "idempotency_key": "x" * 201}, "idempotency_key"),
    ({"type": "test.echo", "colour": "red"}, "colour"),
    ({"payload": {}}, "type"),
    ({"type": 5}, "type"),
])
def test_bad_fields_are_400_naming_the_field(client, engine, body, field):
    response = post_jobs(client, body)
    assert response.status_code == 400, response.json
    assert response.json["field"] == field and field in response.json["message"]
    assert fetch_jobs(engine) == []


def test_unknown_type_is_422(client, engine):
    response = post_jobs(client, {"type": "no.such.type"})
    assert response.status_code == 422 and response.json["error"] == "unknown_type"
    assert fetch_jobs(engine) == []


def test_one_bad_job_in_a_batch_rejects_the_batch_and_names_it(client, engine):
    jobs = [{"type": "test.echo"}] * 5 + [{"type": "test.echo", "priority": 99}]
    response = post_jobs(client, {"jobs": jobs})
    assert response.status_code == 400 and response.json["field"] == "jobs[5].priority"
    assert response.json["index"] == 5
    assert fetch_jobs(engine) == []


def test_batch_limits(client):
    assert post_jobs(client, {"jobs": []}).status_code == 400
    assert post_jobs(client, {"jobs": [{"type": "test.echo"}] * 1001}).status_code == 400
    assert post_jobs(client, {"jobs": [{"type": "test.echo"}], "extra": 1}).status_code == 400


def test_too_deep_or_too_big_payloads(client, app):
    deep = {}
    cursor = deep
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]
    response = post_jobs(client, {"type": "test.echo", "payload": deep})
    assert response.status_code == 400 and "nested deeper" in response.json["message"]
    big = {"blob": "x" * (app.extensions["jobprocessor"].settings.MAX_PAYLOAD_BYTES + 1)}
    response = post_jobs(client, {"type": "test.echo", "payload": big})
    assert response.status_code == 400 and "larger than" in response.json["message"]


def test_request_body_over_the_limit_is_413(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/jobs", data=b"{" + b" " * limit + b"}", content_type="application/json", headers=AUTH)
    assert response.status_code == 413 and response.json["error"]


def test_wrong_content_type_is_415(client):
    response = client.post("/jobs", data='{"type": "test.echo"}', content_type="text/plain", headers=AUTH)
    assert response.status_code == 415


# --- reading ---------------------------------------------------------------------------------------------------------

def test_get_job_and_404(client, engine):
    (job_id,) = insert_jobs(engine, 1, "test.echo")
    assert client.get(f"/jobs/{job_id}", headers=AUTH).json["id"] == job_id
    assert client.get("/jobs/999999", headers=AUTH).status_code == 404
    assert client.get("/jobs/abc", headers=AUTH).status_code == 400
    assert client.get("/jobs/99999999999999999999", headers=AUTH).status_code == 400


def test_list_filters(client, engine):
    insert_jobs(engine, 3, "test.echo", store_id="'a'", batch_id="'b1'")
    insert_jobs(engine, 2, "test.record", store_id="'b'", status="'failed'")
    def ids(query):
        return sorted(j["id"] for j in client.get(f"/jobs?{query}", headers=AUTH).json["jobs"])
    assert ids("status=failed") == [4, 5]
    assert ids("type=test.echo") == [1, 2, 3]
    assert ids("store_id=b&status=failed") == [4, 5]
    assert ids("batch_id=b1") == [1, 2, 3]
    assert ids("status=&type=") == [1, 2, 3, 4, 5]
    assert client.get("/jobs?status=weird", headers=AUTH).status_code == 400
    assert client.get("/jobs?limit=0", headers=AUTH).status_code == 400
    assert client.get("/jobs?after=x", headers=AUTH).status_code == 400


def test_list_limit_is_at_most_500(client, engine):
    """GET /jobs takes `limit` up to 500 (README, /openapi.json): 500 is a full page; 501 or 5000 is a 400 JSON
    error naming the parameter and its bounds, not a bigger (or silently capped) page."""
    documented = next(p for p in client.get("/openapi.json", headers=AUTH).json["paths"]["/jobs"]["get"]["parameters"]
                      if p["name"] == "limit")
    assert documented["schema"]["maximum"] == 500
    insert_jobs(engine, 501, "test.echo")
    page = client.get("/jobs?limit=500", headers=AUTH)
    assert page.status_code == 200 and len(page.json["jobs"]) == 500 and page.json["next_after"] == 2
    for too_many in (501, 5000):
        refused = client.get(f"/jobs?limit={too_many}", headers=AUTH)
        assert refused.status_code == 400 and refused.mimetype == "application/json"
        assert refused.json["error"] == "invalid_parameter"
        assert refused.json["message"] == f"limit must be a whole number from 1 to 500, got {too_many}."


def test_keyset_pages_cost_one_query_each(client, engine):
    insert_jobs(engine, 250, "test.echo")
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    seen, after, pages = [], None, 0
    try:
        while True:
            url = "/jobs?limit=100" + (f"&after={after}" if after else "")
            body = client.get(url, headers=AUTH).json
            pages += 1
            seen += [j["id"] for j in body["jobs"]]
            after = body["next_after"]
            if after is None:
                break
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen == list(range(250, 0, -1))  # newest first, no gaps, no repeats
    assert pages == 3 and len(statements) == 3


# --- retry and cancel -------------------------------------------------------------------------------------------------

def test_retry_failed_and_cancel_pending(client, engine):
    (failed,) = insert_jobs(engine, 1, "test.echo", status="'failed'", attempts="3", last_error="'x'")
    (pending,) = insert_jobs(engine, 1, "test.echo")
    (done,) = insert_jobs(engine, 1, "test.echo", status="'completed'")
    retried = client.post(f"/jobs/{failed}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.json["status"] == "pending" and retried.json["attempts"] == 0
    cancelled = client.post(f"/jobs/{pending}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert client.post(f"/jobs/{pending}/retry", headers=AUTH).json["status"] == "pending"  # cancelled -> pending
    conflict = client.post(f"/jobs/{done}/cancel", headers=AUTH)
    assert conflict.status_code == 409 and "completed" in conflict.json["message"]
    assert client.post(f"/jobs/{done}/retry", headers=AUTH).status_code == 409
    assert client.post("/jobs/424242/retry", headers=AUTH).status_code == 404


def test_a_cancelled_job_is_never_claimed(client, engine):
    (job_id,) = insert_jobs(engine, 1, "test.echo")
    client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
    assert client.post("/process-pending", headers=AUTH).json["claimed"] == 0


def test_healthz_needs_no_secret(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok"


def test_unknown_paths_and_methods_are_json(client):
    assert client.get("/nope", headers=AUTH).json["error"] == "not_found"
    response = client.delete("/jobs", headers=AUTH)
    assert response.status_code == 405 and response.json["error"]
