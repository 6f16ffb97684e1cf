"""Every pause and limit change is in the action log (job_actions) -- who, what, on what, when -- whichever path
made it: the HTTP API (Flask test client), the CLI (its runner), the dashboard (signed in through its form); one
function writes them all (jobprocessor/flow/audit.py), in the transaction of the change. A refused or missing
change logs nothing."""
from __future__ import annotations

import getpass
import json

import pytest
from sqlalchemy import text

from jobprocessor import create_app
from tests.support.dashboard_fixtures import DASHBOARD_SETTINGS, OPERATOR_SECRET, page_token, sign_in
from tests.support.settings import AUTH, make_settings


def logged(engine) -> list[dict]:
    """The action log, oldest first: (actor, role, action, on, changed) and its times."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, role, action, filter, changed, status, at, finished_at "
                                 "FROM job_actions ORDER BY id")).mappings().all()
    return [dict(row) for row in rows]


def entries(engine) -> list[tuple]:
    return [(r["actor"], r["role"], r["action"], r["filter"], r["changed"]) for r in logged(engine)]


def test_the_api_logs_every_pause_and_limit_change(client, engine):
    made = client.post("/pauses", json={"type": "test.echo", "store_id": "s1"}, headers=AUTH).json
    again = client.post("/pauses", json={"type": "test.echo", "store_id": "s1"}, headers=AUTH)
    assert again.status_code == 200  # the same pause: logged, changing nothing
    assert client.delete(f"/pauses/{made['id']}", headers=AUTH).status_code == 204
    limit = {"store_id": "s1", "max_running": 2, "weight": 3}
    first = client.put("/limits", json=limit, headers=AUTH)
    assert first.status_code == 201
    same = client.put("/limits", json=limit, headers=AUTH)  # the same values: logged, changing nothing
    assert same.status_code == 200 and same.json["updated_at"] == first.json["updated_at"]
    assert client.put("/limits", json=dict(limit, weight=4), headers=AUTH).status_code == 200
    assert client.delete("/limits?store_id=s1", headers=AUTH).status_code == 204
    pause_on = {"type": "test.echo", "store_id": "s1", "id": made["id"]}
    limit_on = {"store_id": "s1", "type": None, "max_running": 2, "max_starts_per_minute": None, "weight": 3,
                "openai_tokens_per_minute": None}
    assert entries(engine) == [
        ("api", "cron_secret", "pause.add", pause_on, 1),
        ("api", "cron_secret", "pause.add", pause_on, 0),
        ("api", "cron_secret", "pause.remove", pause_on, 1),
        ("api", "cron_secret", "limit.put", limit_on, 1),
        ("api", "cron_secret", "limit.put", limit_on, 0),
        ("api", "cron_secret", "limit.put", dict(limit_on, weight=4), 1),
        ("api", "cron_secret", "limit.remove", {"store_id": "s1", "type": None}, 1),
    ]
    assert all(r["status"] == "done" and r["at"] is not None and r["finished_at"] is not None
               for r in logged(engine))


def test_the_api_logs_nothing_it_refused_or_did_not_find(client, engine):
    assert client.post("/pauses", json={}, headers=AUTH).status_code == 400
    assert client.delete("/pauses/12345", headers=AUTH).status_code == 404
    assert client.put("/limits", json={"store_id": "s1", "weight": 0}, headers=AUTH).status_code == 400
    assert client.delete("/limits?store_id=nobody", headers=AUTH).status_code == 404
    assert client.post("/pauses", json={"type": "test.echo"}).status_code == 401
    assert logged(engine) == []


def test_a_change_and_its_record_commit_together(client, engine, monkeypatch):
    """The record is written in the change's transaction: when it cannot be written, the change is not made."""
    from jobprocessor.flow import audit

    def broken(*args, **kwargs):
        raise RuntimeError("the action log is unavailable")

    monkeypatch.setattr(audit, "record", broken)
    client.application.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.post("/pauses", json={"store_id": "s1"}, headers=AUTH).status_code == 500
    assert client.put("/limits", json={"store_id": "s1", "max_running": 1}, headers=AUTH).status_code == 500
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_pauses")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM job_store_limits")).scalar_one() == 0


def test_the_cli_logs_every_pause_and_limit_change(app, engine):
    runner = app.test_cli_runner()

    def run(*args):
        result = runner.invoke(args=["jobs", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    made = run("pause", "--store", "s2")
    assert run("resume", str(made["id"])) == {"resumed": made["id"]}
    run("limits", "set", "--type", "test.echo", "--max-running", "4")  # every store's row of a type
    run("limits", "remove", "--type", "test.echo")
    assert runner.invoke(args=["jobs", "resume", "999"]).exit_code != 0  # nothing to resume: nothing logged
    assert runner.invoke(args=["jobs", "limits", "remove", "--store", "nobody"]).exit_code != 0
    user = getpass.getuser()[:50] or "shell"
    pause_on = {"type": None, "store_id": "s2", "id": made["id"]}
    assert entries(engine) == [
        ("cli", user, "pause.add", pause_on, 1),
        ("cli", user, "pause.remove", pause_on, 1),
        ("cli", user, "limit.put", {"store_id": None, "type": "test.echo", "max_running": 4,
                                    "max_starts_per_minute": None, "weight": None,
                                    "openai_tokens_per_minute": None}, 1),
        ("cli", user, "limit.remove", {"store_id": None, "type": "test.echo"}, 1),
    ]


@pytest.fixture
def operator(database_url, clean_db):
    app = create_app(make_settings(database_url, **DASHBOARD_SETTINGS))
    app.config["TESTING"] = True
    with app.app_context():
        client = app.test_client()
        assert sign_in(client, OPERATOR_SECRET).status_code == 302
        yield client
        from jobprocessor.extensions import db

        db.engine.dispose()


def test_the_dashboard_logs_them_the_same_way(operator):
    from jobprocessor.extensions import db

    token = page_token(operator)
    assert operator.post("/dashboard/pauses", data={"csrf_token": token, "store_id": "s3"}).status_code == 302
    with db.engine.connect() as conn:
        pause_id = conn.execute(text("SELECT id FROM job_pauses")).scalar_one()
    assert operator.post(f"/dashboard/pauses/{pause_id}/remove", data={"csrf_token": token}).status_code == 302
    assert operator.post("/dashboard/limits", data={"csrf_token": token, "store_id": "s3",
                                                    "max_starts_per_minute": "30"}).status_code == 302
    assert operator.post("/dashboard/limits/remove", data={"csrf_token": token, "store_id": "s3"}).status_code == 302
    pause_on = {"type": None, "store_id": "s3", "id": pause_id}
    assert entries(db.engine) == [
        ("dashboard", "operator", "pause.add", pause_on, 1),
        ("dashboard", "operator", "pause.remove", pause_on, 1),
        ("dashboard", "operator", "limit.put", {"store_id": "s3", "type": None, "max_running": None,
                                                "max_starts_per_minute": 30, "weight": None,
                                                "openai_tokens_per_minute": None}, 1),
        ("dashboard", "operator", "limit.remove", {"store_id": "s3", "type": None}, 1),
    ]
