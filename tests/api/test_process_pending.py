"""POST/GET /process-pending over the Flask test client: auth, parameters, the empty path, database outage."""
import dataclasses

import pytest
from sqlalchemy import event, text

from jobprocessor import create_app
from tests.support.db import insert_jobs
from tests.support.gunicorn import free_port
from tests.support.plans import nested_plans
from tests.support.settings import AUTH, SECRET, make_settings

# --- auth ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {SECRET}"},
    {"Authorization": f"bearer {SECRET}"},
    {"X-Cron-Secret": SECRET},
])
def test_accepted_secrets(client, headers):
    assert client.post("/process-pending", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-secret-wrong-secret"},
    {"Authorization": f"Bearer {SECRET}x"},
    {"Authorization": f"Bearer {SECRET[:-1]}"},
    {"Authorization": f"Basic {SECRET}"},
    {"Authorization": "Bearer "},
    {"X-Cron-Secret": ""},
    {"X-Cron-Secret": "nope"},
    {"Authorization": "Bearer ünïcödé-ünïcödé"},
])
def test_rejected_secrets(client, headers):
    response = client.post("/process-pending", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "unauthorized" and response.json["message"]


@pytest.mark.parametrize("secret", ["", "fifteen-chars!!"])
def test_unset_or_short_secret_fails_closed(client, app, secret):
    state = app.extensions["jobprocessor"]
    state.settings = dataclasses.replace(state.settings, CRON_SECRET="")
    # start-up refuses a short secret (test_config); one that slipped in afterwards is still refused per request
    object.__setattr__(state.settings, "CRON_SECRET", secret)
    for headers in ({}, {"Authorization": f"Bearer {secret}"}, {"X-Cron-Secret": secret}):
        response = client.post("/process-pending", headers=headers)
        assert response.status_code == 503
        assert response.json["error"] == "secret_not_configured"
        assert "CRON_SECRET" in response.json["message"]


def test_auth_happens_before_any_query(client, engine):
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        for path in ("/process-pending", "/jobs", "/jobs/1"):
            assert client.post(path, headers={"X-Cron-Secret": "guess"}).status_code in (401, 405)
            assert client.get(path, headers={"X-Cron-Secret": "guess"}).status_code == 401
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


def test_get_works_for_vercel_cron(client, engine):
    insert_jobs(engine, 2, "test.echo")
    response = client.get("/process-pending?limit=5", headers=AUTH)
    assert response.status_code == 200 and response.json["claimed"] == 2


# --- parameters ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,name", [
    ("limit=0", "limit"), ("limit=1000001", "limit"), ("limit=abc", "limit"), ("limit=1e9", "limit"),
    ("limit=1.5", "limit"), ("limit=-3", "limit"), ("limit=", None), ("budget_s=0", "budget_s"),
    ("budget_s=901", "budget_s"), ("budget_s=-1", "budget_s"), ("budget_s=nan", "budget_s"),
    ("budget_s=inf", "budget_s"), ("budget_s=ten", "budget_s"), ("type=", None),
])
def test_bad_query_parameters(client, query, name):
    response = client.post(f"/process-pending?{query}", headers=AUTH)
    if name is None:  # an empty value means "use the default"
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_parameter" and name in response.json["message"]


@pytest.mark.parametrize("body,name", [
    ({"limit": "5x"}, "limit"), ({"limit": True}, "limit"), ({"limit": 2.5}, "limit"), ({"limit": 5_000_000}, "limit"),
    ({"budget_s": "fast"}, "budget_s"), ({"budget_s": None, "limit": [1]}, "limit"), ({"type": 7}, "type"),
])
def test_bad_json_parameters(client, body, name):
    response = client.post("/process-pending", json=body, headers=AUTH)
    assert response.status_code == 400 and name in response.json["message"]


def test_unknown_type_filter_is_422(client):
    response = client.post("/process-pending?type=no.such.type", headers=AUTH)
    assert response.status_code == 422 and response.json["error"] == "unknown_type"


def test_parameters_from_json_body_and_query(client, engine):
    insert_jobs(engine, 5, "test.echo")
    assert client.post("/process-pending", json={"limit": 2, "budget_s": 5}, headers=AUTH).json["claimed"] == 2
    assert client.post("/process-pending?limit=1", headers=AUTH).json["claimed"] == 1


def test_malformed_bodies(client):
    cases = [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_encoding"),
        (b'{"limit": NaN}', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"limit=5", "text/plain", 415, "unsupported_media_type"),
    ]
    for body, content_type, status, code in cases:
        response = client.post("/process-pending", data=body, content_type=content_type, headers=AUTH)
        assert (response.status_code, response.json["error"]) == (status, code), body


def test_summary_has_the_contract_fields(client, engine):
    insert_jobs(engine, 3, "test.echo", store_id="'a'")
    insert_jobs(engine, 1, "test.fail")
    body = client.post("/process-pending", headers=AUTH).json
    for key in ("claimed", "succeeded", "retried", "failed", "released", "rescued", "duration_ms", "stores"):
        assert key in body
    assert (body["claimed"], body["succeeded"], body["retried"]) == (4, 3, 1)
    assert body["stores"] == {"a": 3, "": 1}


# --- the empty path ------------------------------------------------------------------------------------------------

def test_nothing_due_costs_one_indexed_statement(client, engine):
    insert_jobs(engine, 50, "test.echo", run_at="now() + interval '1 hour'")
    insert_jobs(engine, 50, "test.echo", status="'completed'")
    # jobs another call is running (live leases: nothing to rescue), as a busy queue has; and statistics of this
    # queue, not those a previous test (or no autoanalyze yet) left: the plans checked below were once chosen on
    # whatever statistics the worker's earlier test files had left, and with no running job in them the rescue's
    # read could as well go through jobs_type_status_live_idx (flaky); with running rows counted, only the lease
    # index serves `status = 'running' AND locked_until < now() ORDER BY locked_until`
    insert_jobs(engine, 50, "test.echo", status="'running'", attempts="1", started_at="now()",
                locked_by="'another-call'", locked_until="now() + interval '1 minute'")
    with engine.begin() as conn:
        conn.execute(text("ANALYZE jobs, job_store_queues, job_store_arrivals"))
    statements = []

    def record(conn, cursor, statement, parameters, *args):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        body = client.post("/process-pending", headers=AUTH).json
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert body["claimed"] == 0 and body["rescued"] == 0 and body["message"] == "No pending jobs"
    assert len(statements) == 1
    statement, parameters = statements[0]
    # run it again with every plan logged, those of the claim function's own statements included
    plans = nested_plans(engine, statement, parameters)
    assert "jobs_running_lease_idx" in plans  # the rescue
    assert "job_store_queues_wait_idx" in plans  # the fair claim's read of the stores that may have a due job
    assert "Seq Scan on jobs" not in plans


# --- database outage -------------------------------------------------------------------------------------------------

@pytest.fixture
def app_without_database():
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing_here")
    app = create_app(settings)
    return app


@pytest.mark.parametrize("method,path,kwargs", [
    ("post", "/process-pending", {}),
    ("get", "/process-pending", {}),
    ("post", "/jobs", {"json": {"type": "test.echo"}}),
    ("get", "/jobs", {}),
    ("get", "/jobs/1", {}),
    ("get", "/healthz", {}),
])
def test_database_unreachable_is_503(app_without_database, method, path, kwargs):
    client = app_without_database.test_client()
    response = getattr(client, method)(path, headers=AUTH, **kwargs)
    assert response.status_code == 503
    assert response.json["error"] == "database_unavailable" and response.json["message"]
