"""The dashboard through Flask's test client against a real PostgreSQL: closed by default, sign-in, the session
cookie, CSRF, roles, the sign-in throttle, nothing secret in pages or logs, every page, and the flow-control
plug-in (pauses, limits, wait reasons) once its objects exist. tests/dashboard/ drives the same in a browser."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from jobprocessor import create_app
from jobprocessor.config import ConfigError
from tests.support.dashboard_fixtures import (
    DASHBOARD_SETTINGS,
    OPERATOR_SECRET,
    READONLY_SECRET,
    SESSION_KEY,
    csrf_of,
    page_token,
    sign_in,
)
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import make_settings

PAGES = ["/dashboard/", "/dashboard/stores", "/dashboard/stores/s1", "/dashboard/jobs", "/dashboard/jobs/1",
         "/dashboard/failed", "/dashboard/batches", "/dashboard/schedules", "/dashboard/controls",
         "/dashboard/actions", "/dashboard/bulk/confirm?action=retry&status=failed"]








@pytest.fixture
def reader(dash):
    client = dash.test_client()
    assert sign_in(client, READONLY_SECRET).status_code == 302
    return client


def _some_jobs(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_schedules (name, cron, job_type, next_run_at) "
                          "VALUES ('nightly', '0 3 * * *', 'test.echo', now() + interval '1 day')"))
    insert_jobs(engine, 3, store_id="'s1'", batch_id="'b1'")
    insert_jobs(engine, 4, job_type="test.fail", status="'failed'", store_id="'s1'", attempts="3",
                completed_at="now()", last_error="'ValueError: product ' || g || ' missing'")


# --- closed by default ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/signin", "/dashboard/jobs"])
def test_without_a_secret_the_dashboard_says_it_is_closed(client, path):
    response = client.get(path)
    assert response.status_code == 503
    assert "DASHBOARD_SECRET" in response.get_data(as_text=True)
    assert client.post("/dashboard/signin", data={"secret": "anything"}).status_code == 503


@pytest.mark.parametrize("overrides,variable", [
    (dict(DASHBOARD_SECRET="short", DASHBOARD_SESSION_KEY=SESSION_KEY), "DASHBOARD_SECRET"),
    (dict(DASHBOARD_READONLY_SECRET="short", DASHBOARD_SESSION_KEY=SESSION_KEY), "DASHBOARD_READONLY_SECRET"),
    (dict(DASHBOARD_SECRET=OPERATOR_SECRET), "DASHBOARD_SESSION_KEY"),
    (dict(DASHBOARD_READONLY_SECRET=READONLY_SECRET, DASHBOARD_SESSION_KEY="too-short"), "DASHBOARD_SESSION_KEY"),
    (dict(DASHBOARD_SECRET=OPERATOR_SECRET, DASHBOARD_READONLY_SECRET=OPERATOR_SECRET,
          DASHBOARD_SESSION_KEY=SESSION_KEY), "DASHBOARD_READONLY_SECRET"),
])
def test_half_a_dashboard_configuration_stops_start_up(database_url, overrides, variable):
    with pytest.raises(ConfigError) as caught:
        make_settings(database_url, **overrides)
    assert str(caught.value).startswith(variable)


# --- signing in ----------------------------------------------------------------------------------------------------

def test_signing_in_sets_a_strict_httponly_cookie_and_lands_where_asked(dash_client):
    first = dash_client.get("/dashboard/jobs?status=failed")
    assert first.status_code == 302 and "/dashboard/signin" in first.headers["Location"]
    response = sign_in(dash_client, OPERATOR_SECRET, next_path="/dashboard/jobs?status=failed")
    assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard/jobs?status=failed")
    cookie = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("jobprocessor_dashboard=")][0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would never come back
    assert OPERATOR_SECRET not in cookie
    assert dash_client.get("/dashboard/jobs?status=failed").status_code == 200


def test_behind_https_the_cookie_is_secure(dash_client):
    form = dash_client.get("/dashboard/signin", base_url="https://jobs.example.com")
    response = dash_client.post("/dashboard/signin", base_url="https://jobs.example.com",
                                data={"secret": OPERATOR_SECRET, "csrf_token": csrf_of(form.get_data(as_text=True))})
    cookie = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("jobprocessor_dashboard=")][0]
    assert "Secure" in cookie
    proxied = dash_client.get("/dashboard/signin", headers={"X-Forwarded-Proto": "https"})
    assert all("Secure" in c for c in proxied.headers.getlist("Set-Cookie"))


def test_a_wrong_secret_opens_nothing_and_is_throttled(dash, dash_client, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(dash.extensions["jobprocessor"].settings.DASHBOARD_SIGNIN_ATTEMPTS):
        assert sign_in(dash_client, "wrong-secret-0123456789").status_code == 401
    assert dash_client.get("/dashboard/").status_code == 302  # still signed out
    refused = sign_in(dash_client, OPERATOR_SECRET)  # even the right secret, from this address, for a while
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "600"
    other = dash.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.9"  # another address is not held back
    assert sign_in(other, OPERATOR_SECRET).status_code == 302
    assert "wrong-secret" not in caplog.text and OPERATOR_SECRET not in caplog.text


def test_the_sign_in_form_needs_its_own_token(dash_client):
    dash_client.get("/dashboard/signin")
    response = dash_client.post("/dashboard/signin", data={"secret": OPERATOR_SECRET, "csrf_token": "forged"})
    assert response.status_code == 403 and not any(
        c.startswith("jobprocessor_dashboard=") for c in response.headers.getlist("Set-Cookie"))


def test_the_next_page_is_never_another_site(dash_client):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = sign_in(dash_client, OPERATOR_SECRET, next_path=target)
        assert response.headers["Location"].endswith("/dashboard/")


def test_a_forged_or_stale_cookie_is_no_session(dash, database_url):
    client = dash.test_client()
    sign_in(client, OPERATOR_SECRET)
    cookie = client.get_cookie("jobprocessor_dashboard", path="/dashboard")
    forged = dash.test_client()
    forged.set_cookie("jobprocessor_dashboard", cookie.value[:-3] + "abc", path="/dashboard")
    assert forged.get("/dashboard/").status_code == 302
    # the operators' secret changed: sessions it opened are closed
    rotated = create_app(make_settings(database_url, **{**DASHBOARD_SETTINGS,
                                                        "DASHBOARD_SECRET": "a-new-operator-secret-0000"}))
    stale = rotated.test_client()
    stale.set_cookie("jobprocessor_dashboard", cookie.value, path="/dashboard")
    assert stale.get("/dashboard/").status_code == 302


def test_signing_out_ends_the_session(operator):
    token = page_token(operator)
    response = operator.post("/dashboard/signout", data={"csrf_token": token})
    assert response.status_code == 302
    assert operator.get("/dashboard/").status_code == 302


# --- CSRF and roles ------------------------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(operator, engine):
    _some_jobs(engine)
    for data in ({}, {"csrf_token": "not-the-token"}):
        response = operator.post("/dashboard/bulk", data={"action": "retry", "status": "failed", **data})
        assert response.status_code == 403 and "CSRF" in response.get_data(as_text=True)
        assert operator.post("/dashboard/jobs/5/retry", data=data).status_code == 403
    assert {j["status"] for j in fetch_jobs(engine, "type = 'test.fail'")} == {"failed"}
    ok = operator.post("/dashboard/bulk",
                       data={"action": "retry", "status": "failed", "csrf_token": page_token(operator)})
    assert ok.status_code == 302
    assert {j["status"] for j in fetch_jobs(engine, "type = 'test.fail'")} == {"pending"}


def test_the_token_may_come_as_a_header(operator, engine):
    _some_jobs(engine)
    response = operator.post("/dashboard/jobs/5/retry", headers={"X-CSRF-Token": page_token(operator)})
    assert response.status_code == 302 and fetch_jobs(engine, "id = 5")[0]["status"] == "pending"


def test_a_read_only_session_sees_no_buttons_and_its_posts_are_refused(reader, operator, engine):
    _some_jobs(engine)
    for path in ("/dashboard/jobs?status=failed", "/dashboard/failed", "/dashboard/jobs/5", "/dashboard/schedules"):
        body = reader.get(path).get_data(as_text=True)
        assert "bulk-retry" not in body and "retry-group" not in body and 'id="retry-job"' not in body
        assert "schedule-switch" not in body
        assert 'action="/dashboard/signout"' in body  # signing out is all it may post
        operator_body = operator.get(path).get_data(as_text=True)
        assert any(mark in operator_body for mark in ("bulk-retry", "retry-group", 'id="retry-job"',
                                                      "schedule-switch"))
    assert 'id="role">read-only' in reader.get("/dashboard/").get_data(as_text=True)
    token = page_token(reader)
    assert reader.post("/dashboard/bulk", data={"action": "retry", "csrf_token": token}).status_code == 403
    assert reader.post("/dashboard/jobs/5/retry", data={"csrf_token": token}).status_code == 403
    assert reader.get("/dashboard/bulk/confirm?action=retry").status_code == 403
    assert {j["status"] for j in fetch_jobs(engine, "type = 'test.fail'")} == {"failed"}
    assert reader.post("/dashboard/signout", data={"csrf_token": token}).status_code == 302


def test_pages_carry_strict_security_headers_and_no_secret(operator, engine, dash):
    _some_jobs(engine)
    settings = dash.extensions["jobprocessor"].settings
    for path in PAGES:
        response = operator.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:500])
        body = response.get_data(as_text=True)
        for secret in (OPERATOR_SECRET, READONLY_SECRET, SESSION_KEY, settings.CRON_SECRET):
            assert secret not in body
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
        assert "<script>" not in body and "http://" not in body.replace("http://localhost", "")  # nothing from afar


# --- pages ---------------------------------------------------------------------------------------------------------

def test_every_page_shows_real_data(operator, engine):
    _some_jobs(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_ticks (worker, job_limit, budget_s, rounds, claimed, succeeded, failed, "
                          "started_at, ended_at) VALUES ('host:1:abc', 100, 20, 1, 9, 7, 2, now() - interval '2 min', "
                          "now() - interval '1 min')"))
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) "
                          "VALUES ('test.echo', '{0.1,0.2,0.3}', 3)"))
    overview = operator.get("/dashboard/").get_data(as_text=True)
    assert 'id="due">3<' in overview and "host:1:abc" in overview and "completed 7" in overview
    assert "test.fail" in overview and "200 ms" in overview  # p50 of the runtimes
    stores = operator.get("/dashboard/stores").get_data(as_text=True)
    assert ">s1</a>" in stores and "not available" not in stores
    assert 'id="store-due">3<' in operator.get("/dashboard/stores/s1").get_data(as_text=True)
    failed = operator.get("/dashboard/failed").get_data(as_text=True)
    assert "ValueError: product N missing" in failed and ">4<" in failed
    assert "b1" in operator.get("/dashboard/batches").get_data(as_text=True)
    assert "nightly" in operator.get("/dashboard/schedules").get_data(as_text=True)
    job = operator.get("/dashboard/jobs/5").get_data(as_text=True)
    assert "ValueError: product 2 missing" in job and "Not waiting: it is failed." in job
    confirm = operator.get("/dashboard/bulk/confirm?action=retry&status=failed&type=test.fail").get_data(as_text=True)
    assert 'id="matched">4<' in confirm


def test_filters_and_keyset_pages(operator, engine):
    insert_jobs(engine, 120, store_id="'s' || (g % 2)")
    first = operator.get("/dashboard/jobs?store_id=s1").get_data(as_text=True)
    assert first.count('href="/dashboard/jobs/') == 50 and "next-page" in first
    assert "/dashboard/jobs/120" not in first and "/dashboard/jobs/119" in first
    assert operator.get("/dashboard/jobs?status=bogus").status_code == 400
    assert operator.get("/dashboard/jobs?created_after=yesterday").status_code == 400
    assert operator.get("/dashboard/jobs/999999").status_code == 404


def test_single_job_actions_and_schedules_are_logged(operator, engine):
    _some_jobs(engine)
    token = page_token(operator)
    assert operator.post("/dashboard/jobs/1/cancel", data={"csrf_token": token}).status_code == 302
    assert operator.post("/dashboard/jobs/1/cancel", data={"csrf_token": token}).status_code == 409
    assert operator.post("/dashboard/schedules/nightly/disable", data={"csrf_token": token}).status_code == 302
    assert "no" in operator.get("/dashboard/schedules").get_data(as_text=True)
    log = operator.get("/dashboard/actions").get_data(as_text=True)
    assert "schedule.disable" in log and "cancel" in log and "dashboard · operator" in log


# --- tenant flow control (jobprocessor/dashboard/flow_control.py over jobprocessor/flow) ------------------------

def test_pauses_limits_and_wait_reasons_through_the_dashboard(operator, engine):
    _some_jobs(engine)
    token = page_token(operator)
    assert operator.post("/dashboard/pauses", data={"csrf_token": token, "type": "test.echo"}).status_code == 302
    assert operator.post("/dashboard/pauses", data={"csrf_token": token}).status_code == 400
    bad = operator.post("/dashboard/pauses", data={"csrf_token": token, "type": "x" * 300})
    assert bad.status_code == 400 and "at most" in bad.get_data(as_text=True)  # POST /pauses's own rules
    assert operator.post("/dashboard/limits", data={"csrf_token": token, "store_id": "s1", "max_running": "2",
                                                    "weight": "3"}).status_code == 302
    refused = operator.post("/dashboard/limits", data={"csrf_token": token, "store_id": "s1", "type": "test.echo",
                                                       "weight": "2"})
    assert refused.status_code == 400 and "weight is per store" in refused.get_data(as_text=True)
    controls = operator.get("/dashboard/controls").get_data(as_text=True)
    assert "not available" not in controls and "test.echo" in controls
    stores = operator.get("/dashboard/stores").get_data(as_text=True)
    assert "≤2 running" in stores and "test.echo" in stores
    assert "max_running 2" in operator.get("/dashboard/stores/s1").get_data(as_text=True)
    job = operator.get("/dashboard/jobs/1").get_data(as_text=True)  # what GET /jobs/1/wait says
    assert "<code>paused</code>" in job and "type test.echo" in job
    with engine.connect() as conn:
        pause_id = conn.execute(text("SELECT id FROM job_pauses")).scalar_one()
        assert conn.execute(text("SELECT weight FROM job_store_limits WHERE store_id = 's1'")).scalar_one() == 3
    assert operator.post(f"/dashboard/pauses/{pause_id}/remove", data={"csrf_token": token}).status_code == 302
    assert "<code>waiting_for_turn</code>" in operator.get("/dashboard/jobs/1").get_data(as_text=True)
    assert operator.post("/dashboard/limits/remove", data={"csrf_token": token, "store_id": "s1"}).status_code == 302
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_pauses")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM job_store_limits")).scalar_one() == 0
    log = operator.get("/dashboard/actions").get_data(as_text=True)
    for action in ("pause.add", "pause.remove", "limit.put", "limit.remove"):
        assert action in log


def test_before_the_flow_control_migration_its_actions_say_so(operator, monkeypatch):
    from jobprocessor.dashboard import flow_control

    monkeypatch.setattr(flow_control, "features", lambda conn: flow_control.Features())
    response = operator.post("/dashboard/pauses", data={"csrf_token": page_token(operator), "type": "x"})
    assert response.status_code == 501 and "not available" in response.get_data(as_text=True)
    assert "not available" in operator.get("/dashboard/controls").get_data(as_text=True)


# --- figures that stay cheap at scale --------------------------------------------------------------------------------

def test_big_counts_are_capped_then_estimated(operator, engine, monkeypatch):
    from jobprocessor import counts
    from jobprocessor.dashboard import data

    insert_jobs(engine, 40, run_at="now() - interval '1 minute'")
    insert_jobs(engine, 2, job_type="test.fail")
    with engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        exact = counts.bounded_count(conn, counts.DUE, cap=100)
        capped = counts.bounded_count(conn, counts.DUE, cap=10)
        wait = counts.oldest_due_wait_s(conn)
    assert (exact.n, exact.exact, str(exact)) == (42, True, "42")
    assert capped.exact is False and capped.n > 10 and str(capped).startswith("≈")
    assert 55 < wait < 120
    monkeypatch.setattr(data, "DUE_COUNT_CAP", 10)
    monkeypatch.setattr(data, "TYPE_COUNT_CAP", 5)
    body = operator.get("/dashboard/").get_data(as_text=True)
    assert 'id="due">≈' in body
    assert '≈' in body.split('id="by-type"')[1].split("test.echo</a>")[1].split("</tr>")[0]  # test.echo: 40 > 5
    assert ">2<" in body.split('id="by-type"')[1].split("test.fail</a>")[1].split("</tr>")[0]  # test.fail: exact


def test_the_charts_spread_each_tick_over_the_minutes_it_ran(engine):
    from jobprocessor.dashboard import data

    with engine.begin() as conn:
        # 60 jobs done by a call that ran from 90 s to 30 s ago (a minute, across two or three buckets)
        conn.execute(text("INSERT INTO job_ticks (worker, job_limit, budget_s, succeeded, failed, started_at, "
                          "ended_at) VALUES ('w', 1, 1, 60, 6, now() - interval '90 s', now() - interval '30 s')"))
        hour = data._rows(conn, data.THROUGHPUT, step="1 minute", span="1 hour")
    assert len(hour) in (60, 61)
    touched = [b for b in hour if b["completed"]]
    assert 2 <= len(touched) <= 3
    assert abs(sum(b["completed"] for b in hour) - 60) < 1e-6 and abs(sum(b["failed"] for b in hour) - 6) < 1e-6
