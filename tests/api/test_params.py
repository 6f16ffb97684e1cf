"""The API takes exactly what it documents: an unknown query parameter or body field is a 400 naming it (cut short
when it is long), numbers are plain ASCII decimals everywhere, HEAD never runs a call, 405 says what is allowed,
/healthz says when the protected endpoints are disabled, and text that merely looks like a NUL escape is stored."""
from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import text

from jobprocessor import create_app
from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH, make_settings

SAMPLE = {"raw_id": "1", "job_id": "1", "batch_id": "b1"}


def routes(app) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):  # HTML pages, not the API
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: SAMPLE.get(m.group(1), "1"), rule.rule)
        out += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


def test_every_endpoint_refuses_an_unknown_query_parameter_naming_it(app, client):
    checked = 0
    for method, path in routes(app):
        response = client.open(f"{path}?limt=5", method=method, headers=AUTH)
        assert response.status_code == 400, (method, path, response.get_data(as_text=True))
        assert response.json["error"] == "unknown_query_parameter" and response.json["field"] == "limt"
        assert "'limt'" in response.json["message"], response.json
        checked += 1
    assert checked >= 13


def test_known_parameters_are_still_taken(client, engine):
    insert_jobs(engine, 2)
    assert client.get("/jobs?limit=1&status=pending&type=test.echo", headers=AUTH).status_code == 200
    assert client.get("/ticks?limit=5", headers=AUTH).status_code == 200
    assert client.post("/process-pending?limit=5&budget_s=5", headers=AUTH).json["claimed"] == 2


def test_the_message_lists_what_is_allowed(client):
    response = client.post("/process-pending?limt=5", headers=AUTH)
    assert response.json["message"] == "Unknown query parameter 'limt'; allowed: limit, budget_s, type."
    assert client.get("/queue/health?x=1", headers=AUTH).json["message"].endswith("it takes none.")


@pytest.mark.parametrize("path,body,field", [
    ("/process-pending", {"limit": 5, "limt": 5}, "limt"),
    ("/process-pending", {"budget": 5}, "budget"),
    ("/jobs", {"jobs": [{"type": "test.echo"}], "batch": "x"}, "batch"),
    ("/jobs", {"type": "test.echo", "priorty": "high"}, "priorty"),
    ("/jobs/1/retry", {"force": True}, "force"),
    ("/jobs/1/cancel", {"reason": "x"}, "reason"),
])
def test_unknown_body_fields_are_400_naming_them_and_change_nothing(client, engine, path, body, field):
    insert_jobs(engine, 1, status="'failed'")
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["field"] == field and f"'{field}'" in response.json["message"]
    assert [job["status"] for job in fetch_jobs(engine)] == ["failed"]


def test_long_unknown_names_are_cut_short_in_the_answer(client):
    name = "x" * 100_000
    for response in (client.post("/jobs", json={"type": "test.echo", name: 1}, headers=AUTH),
                     client.post("/process-pending", json={name: 1}, headers=AUTH),
                     client.get(f"/jobs?{name}=1", headers=AUTH)):
        assert response.status_code == 400
        assert len(response.get_data()) < 1000, len(response.get_data())
        assert "x" * 64 + "..." in response.json["message"]


@pytest.mark.parametrize("value", ["1_0", "\uff11\uff10", "infinity", "nan", "1e", "0x10", "5s", "\u0661\u0662",
                                   "1" * 50])
def test_budget_s_takes_plain_decimals_only_like_limit(client, value):
    for where in ("query", "body"):
        if where == "query":
            response = client.post("/process-pending", query_string={"budget_s": value}, headers=AUTH)
        else:
            response = client.post("/process-pending", json={"budget_s": value}, headers=AUTH)
        assert response.status_code == 400, (where, value, response.get_data(as_text=True))
        assert "budget_s" in response.json["message"]


@pytest.mark.parametrize("value", ["5", "2.5", " 7 ", "1e1", ".5e1", "+3"])
def test_budget_s_plain_decimals_pass(client, value):
    assert client.post("/process-pending", query_string={"budget_s": value}, headers=AUTH).status_code == 200


def test_head_runs_nothing_and_405_says_what_is_allowed(client, engine):
    insert_jobs(engine, 3)
    response = client.head("/process-pending", headers=AUTH)
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert [job["status"] for job in fetch_jobs(engine)] == ["pending"] * 3
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_ticks")).scalar() == 0
    other = client.delete("/jobs", headers=AUTH)
    assert other.status_code == 405 and other.json["error"] == "method_not_allowed"
    assert {"GET", "POST"} <= set(other.headers["Allow"].replace(" ", "").split(","))


def test_healthz_says_when_the_protected_endpoints_are_disabled(database_url, clean_db):
    closed = create_app(make_settings(database_url, CRON_SECRET=""))
    body = closed.test_client().get("/healthz").json
    assert body["api"] == "disabled" and body["auth"]["cron_secret"] is False
    assert "CRON_SECRET is not set" in body["warnings"][0]
    assert closed.test_client().get("/jobs").status_code == 503
    signed = create_app(make_settings(database_url, CRON_SECRET="", TRIGGER_HMAC_SECRET="h" * 32))
    assert "admits hmac only" in signed.test_client().get("/healthz").json["warnings"][0]
    for app in (closed, signed):
        with app.app_context():
            from jobprocessor.extensions import db

            db.engine.dispose()


def test_healthz_with_the_secret_set_has_no_warning(client):
    body = client.get("/healthz").json
    assert (body["api"], body["warnings"], body["auth"]["cron_secret"]) == ("enabled", [], True)


def test_text_that_looks_like_a_nul_escape_is_stored_and_returned(client, engine, settings):
    literal = "C:\\u0000\\path and \\\\u0000"  # backslash-u-0000 as text, no NUL character
    response = client.post("/jobs", json={"type": "test.echo", "payload": {"s": literal, literal: 1}}, headers=AUTH)
    assert response.status_code == 201, response.get_data(as_text=True)
    summary = process_pending(engine, settings, limit=10, budget_s=10)
    assert summary.succeeded == 1, summary
    job = client.get(f"/jobs/{response.json['id']}", headers=AUTH).json
    assert job["payload"]["s"] == literal and job["result"]["payload"]["s"] == literal
    nul = client.post("/jobs", data=json.dumps({"type": "test.echo", "payload": {"s": "a\u0000b"}}),
                      content_type="application/json", headers=AUTH)
    assert nul.status_code == 400 and nul.json["field"] == "payload"


def test_database_errors_log_no_values(app, client, caplog, monkeypatch):
    from jobprocessor import queries

    def failing(conn, job_id):  # a statement PostgreSQL refuses, quoting the value in its message
        return conn.execute(text("SELECT CAST(:value AS integer)"), {"value": "secret-marker-4711"}).first()

    monkeypatch.setattr(queries, "get_job", failing)
    app.config["TESTING"] = False
    with caplog.at_level("INFO"):
        response = client.get("/jobs/1", headers=AUTH)
    assert response.status_code == 500 and response.json["error"] == "database_error"
    assert "secret-marker-4711" not in caplog.text and "secret-marker-4711" not in response.get_data(as_text=True)
    assert '"event": "database_error"' in caplog.text and "InvalidTextRepresentation" in caplog.text
    from jobprocessor.extensions import db

    with pytest.raises(Exception) as raised, db.engine.connect() as conn:
        conn.execute(text("SELECT CAST(:value AS integer)"), {"value": "secret-marker-4711"})
    assert "SQL parameters hidden" in str(raised.value)


def test_a_bad_body_value_is_refused_even_where_the_query_string_wins(client):
    assert client.post("/process-pending?limit=5", json={"limit": "x"}, headers=AUTH).status_code == 400
    unknown = client.post("/process-pending?type=test.echo", json={"type": "no.such.type"}, headers=AUTH)
    assert unknown.status_code == 422
    assert client.post("/process-pending?limit=5", json={"limit": 7}, headers=AUTH).status_code == 200


@pytest.mark.parametrize("raw", ["null", "[]", "5"])
def test_an_optional_body_that_is_not_an_object_is_400_and_changes_nothing(client, engine, raw):
    """Only an empty body means "no parameters": JSON null is a body, and not an object."""
    (pending,) = insert_jobs(engine, 1)
    (failed,) = insert_jobs(engine, 1, status="'failed'")
    for path in ("/process-pending", f"/jobs/{failed}/retry", f"/jobs/{pending}/cancel"):
        response = client.post(path, data=raw, content_type="application/json", headers=AUTH)
        assert response.status_code == 400 and response.json["error"] == "invalid_json", (path, response.json)
    assert [job["status"] for job in fetch_jobs(engine)] == ["pending", "failed"]
    assert client.post(f"/jobs/{failed}/retry", data="", headers=AUTH).status_code == 200
