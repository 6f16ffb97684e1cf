"""Flow control through the API and the CLI: pauses and limits made, read, removed, bad input refused with a 400
that names the field (nothing stored); a pause set over HTTP holds the next /process-pending; the store_lag alert
and the /metrics gauge of the stores that waited longest."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.support.db import fetch_jobs, insert_jobs
from tests.support.flow_fixtures import pause
from tests.support.settings import AUTH


def test_pauses_made_listed_and_removed(client):
    made = client.post("/pauses", json={"store_id": "s1"}, headers=AUTH)
    assert made.status_code == 201 and set(made.json) == {"id", "type", "store_id", "created_at"}
    assert (made.json["type"], made.json["store_id"]) == (None, "s1")
    again = client.post("/pauses", json={"store_id": "s1", "type": None}, headers=AUTH)
    assert again.status_code == 200 and again.json == made.json  # the same pause: nothing new
    typed = client.post("/pauses", json={"type": "test.echo", "store_id": "s1"}, headers=AUTH)
    assert typed.status_code == 201 and typed.json["id"] != made.json["id"]
    listed = client.get("/pauses", headers=AUTH).json["pauses"]
    assert [p["id"] for p in listed] == [made.json["id"], typed.json["id"]]
    assert client.get("/pauses?type=test.echo", headers=AUTH).json["pauses"] == [typed.json]
    assert client.delete(f"/pauses/{made.json['id']}", headers=AUTH).status_code == 204
    missing = client.delete(f"/pauses/{made.json['id']}", headers=AUTH)
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    assert client.get("/pauses", headers=AUTH).json["pauses"] == [typed.json]


@pytest.mark.parametrize("body,field", [
    ({}, "type"), ({"type": None, "store_id": None}, "type"), ({"type": ""}, "type"), ({"store_id": 5}, "store_id"),
    ({"store_id": "a\x00b"}, "store_id"), ({"store": "s1"}, "store"), ([], "body"), ({"type": "x" * 201}, "type"),
])
def test_bad_pauses_are_refused_and_nothing_is_stored(client, body, field):
    response = client.post("/pauses", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == field and response.json["message"]
    assert client.get("/pauses", headers=AUTH).json["pauses"] == []


def test_flow_endpoints_need_the_secret(client):
    for method, path in (("post", "/pauses"), ("get", "/pauses"), ("delete", "/pauses/1"), ("put", "/limits"),
                         ("get", "/limits"), ("delete", "/limits"), ("get", "/jobs/1/wait")):
        response = getattr(client, method)(path)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_limits_set_replaced_read_and_removed(client, engine):
    made = client.put("/limits", json={"store_id": "s1", "max_running": 2, "weight": 3}, headers=AUTH)
    assert made.status_code == 201
    assert {k: made.json[k] for k in ("store_id", "type", "max_running", "max_starts_per_minute", "weight",
                                      "openai_tokens_per_minute")} == {
        "store_id": "s1", "type": None, "max_running": 2, "max_starts_per_minute": None, "weight": 3,
        "openai_tokens_per_minute": None}
    replaced = client.put("/limits", json={"store_id": "s1", "max_starts_per_minute": 10}, headers=AUTH)
    assert replaced.status_code == 200 and (replaced.json["max_running"], replaced.json["weight"]) == (None, None)
    client.put("/limits", json={"store_id": None, "max_running": 5, "weight": 2}, headers=AUTH)
    client.put("/limits", json={"store_id": "s1", "type": "test.sleep", "max_running": 1}, headers=AUTH)
    rows = client.get("/limits", headers=AUTH).json["limits"]
    assert [(r["store_id"], r["type"]) for r in rows] == [(None, None), ("s1", None), ("s1", "test.sleep")]
    insert_jobs(engine, 1, "test.sleep", store_id="'s1'", status="'running'", locked_by="'w'",
                locked_until="now() + interval '1 minute'")
    store = client.get("/limits?store_id=s1", headers=AUTH).json
    assert [(r["store_id"], r["type"]) for r in store["limits"]] == [(None, None), ("s1", None), ("s1", "test.sleep")]
    # s1's own starts limit, the every-store max_running and weight; its sleep type's own max_running
    assert store["effective"] == [
        {"type": None, "max_running": 5, "max_starts_per_minute": 10, "weight": 2, "openai_tokens_per_minute": None,
         "running": 1, "started_last_minute": 0},
        {"type": "test.sleep", "max_running": 1, "max_starts_per_minute": None, "weight": None,
         "openai_tokens_per_minute": None, "running": 1, "started_last_minute": 0}]
    assert client.delete("/limits?store_id=s1&type=test.sleep", headers=AUTH).status_code == 204
    assert client.delete("/limits?store_id=s1&type=test.sleep", headers=AUTH).status_code == 404
    assert client.delete("/limits", headers=AUTH).status_code == 204  # the every-store row
    assert [(r["store_id"], r["type"]) for r in client.get("/limits", headers=AUTH).json["limits"]] == [("s1", None)]


@pytest.mark.parametrize("body,field", [
    ({"max_running": 1}, "store_id"), ({"store_id": "s1"}, "max_running"),
    ({"store_id": "s1", "max_running": None}, "max_running"), ({"store_id": "s1", "max_running": -1}, "max_running"),
    ({"store_id": "s1", "max_running": True}, "max_running"), ({"store_id": "s1", "max_running": 1.5}, "max_running"),
    ({"store_id": "s1", "weight": 0}, "weight"), ({"store_id": "s1", "weight": 1001}, "weight"),
    ({"store_id": "s1", "type": "test.echo", "weight": 2}, "weight"),
    ({"store_id": "s1", "type": "test.echo", "openai_tokens_per_minute": 1000}, "openai_tokens_per_minute"),
    ({"store_id": "", "max_running": 1}, "store_id"), ({"store_id": "s1", "max_runing": 1}, "max_runing"),
    ({"store_id": "s1", "openai_tokens_per_minute": 0}, "openai_tokens_per_minute"),
])
def test_bad_limits_are_refused_and_nothing_is_stored(client, body, field):
    response = client.put("/limits", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert client.get("/limits", headers=AUTH).json["limits"] == []


def test_a_pause_made_over_http_holds_the_next_call_and_running_jobs_finish(client, engine):
    insert_jobs(engine, 3, "test.echo", store_id="'s1'")
    insert_jobs(engine, 3, "test.echo", store_id="'s2'")
    insert_jobs(engine, 1, "test.echo", store_id="'s1'", status="'running'", locked_by="'w'",
                locked_until="now() + interval '1 minute'")
    pause_id = client.post("/pauses", json={"store_id": "s1"}, headers=AUTH).json["id"]
    summary = client.post("/process-pending", json={"limit": 100}, headers=AUTH).json
    assert summary["stores"] == {"s2": 3}
    client.delete(f"/pauses/{pause_id}", headers=AUTH)
    assert client.post("/process-pending", json={"limit": 100}, headers=AUTH).json["stores"] == {"s1": 3}
    assert len(fetch_jobs(engine, "status = 'running'")) == 1  # another call's job, untouched


def test_the_cli_pauses_resumes_sets_limits_and_explains(app, engine):
    runner = app.test_cli_runner()

    def run(*args):
        result = runner.invoke(args=["jobs", *args])
        assert result.exit_code == 0, result.output
        return result.output

    made = json.loads(run("pause", "--store", "s1", "--type", "test.echo"))
    assert made["created"] and made["store_id"] == "s1"
    assert "test.echo" in run("pauses")
    assert json.loads(run("pauses", "--json"))["pauses"][0]["id"] == made["id"]
    assert json.loads(run("resume", "--store", "s1", "--type", "test.echo")) == {"resumed": made["id"]}
    assert run("pauses") == "No pauses.\n"
    refused = runner.invoke(args=["jobs", "pause"])
    assert refused.exit_code != 0 and "names a type, a store_id, or both" in refused.output
    assert json.loads(run("limits", "set", "--store", "s1", "--max-running", "2"))["max_running"] == 2
    bad = runner.invoke(args=["jobs", "limits", "set", "--store", "s1", "--type", "t", "--weight", "2"])
    assert bad.exit_code != 0 and "weight is per store" in bad.output
    assert "s1" in run("limits") and "applies to store s1 now" in run("limits", "--store", "s1")
    job_id, = insert_jobs(engine, 1, "test.echo", store_id="'s1'", run_at="now() + interval '1 hour'")
    assert "not_due" in run("wait", str(job_id))
    assert json.loads(run("wait", str(job_id), "--json"))["reasons"][0]["code"] == "not_due"
    assert json.loads(run("limits", "remove", "--store", "s1"))["removed"] == {"store_id": "s1", "type": None}
    missing = runner.invoke(args=["jobs", "resume", "999"])
    assert missing.exit_code != 0 and "no such pause" in missing.output


def test_store_lag_alerts_and_metrics(client, engine):
    insert_jobs(engine, 2, "test.echo", store_id="'slow'", run_at="now() - interval '20 minutes'")
    insert_jobs(engine, 2, "test.echo", store_id="'late'", run_at="now() - interval '2 hours'")
    insert_jobs(engine, 2, "test.echo", store_id="'fresh'")
    insert_jobs(engine, 2, "test.echo", store_id="'stopped'", run_at="now() - interval '3 hours'")
    pause(engine, store_id="stopped")  # paused on purpose: no alert
    alerts = [a for a in client.get("/queue/health", headers=AUTH).json["alerts"] if a["alert"] == "store_lag"]
    assert [(a["severity"], a["message"].split(":")[0]) for a in alerts] == [
        ("critical", "store late"), ("warning", "store slow")]
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_queue_alert_settings SET store_lag_warning_s = 3600"))
    try:
        alerts = [a for a in client.get("/queue/health", headers=AUTH).json["alerts"] if a["alert"] == "store_lag"]
        assert [a["message"].split(":")[0] for a in alerts] == ["store late"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE job_queue_alert_settings SET store_lag_warning_s = DEFAULT"))
    scrape = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    lines = [line for line in scrape.splitlines() if line.startswith("jobprocessor_store_oldest_wait_seconds{")]
    assert [line.split('"')[1] for line in lines] == ["late", "slow", "fresh"]
    assert 7100 < float(lines[0].split()[-1]) < 7300
