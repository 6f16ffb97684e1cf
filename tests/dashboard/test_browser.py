"""The dashboard in a real browser (headless Chromium) against a real gunicorn and PostgreSQL: sign in, every page
with real data, filter jobs, a bulk retry through its dry-run count and confirmation, a read-only session that
cannot act, a POST without the CSRF token refused, sign out, and a type paused in the dashboard that the next tick
(a real /process-pending on the same gunicorn) skips, with the job's page saying why. One browser for the module,
pages in order. With DASHBOARD_SCREENSHOTS=<dir> set, each page is saved there as a PNG
(docs/dashboard/ holds the ones the README shows)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.browser import require_browser, start_browser, stop_browser
from tests.support.dashboard_fixtures import OPERATOR_SECRET, READONLY_SECRET, SESSION_KEY
from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH

pytestmark = pytest.mark.e2e
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(database_url, raw_engine):
    require_browser()
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_schedules, job_store_queues, job_ticks, job_type_runtimes, "
                          "job_actions, dashboard_signin_failures RESTART IDENTITY"))
        conn.execute(text("INSERT INTO job_schedules (name, cron, job_type, next_run_at) "
                          "VALUES ('nightly-export', '30 2 * * *', 'test.echo', now() + interval '5 hours')"))
        conn.execute(text("""
            INSERT INTO job_ticks (worker, job_limit, budget_s, rounds, claimed, succeeded, retried, failed,
                                   started_at, ended_at)
            SELECT 'web-1-' || g || '-a1b2', 1000, 90, 2, 40 + g % 20, 35 + g % 20, 2, g % 4,
                   now() - make_interval(mins => g), now() - make_interval(mins => g) + interval '50 seconds'
            FROM generate_series(90, 1, -1) AS g"""))
        conn.execute(text("INSERT INTO job_type_runtimes (type, recent_s, runs) VALUES "
                          "('test.echo', '{0.02,0.03,0.05,0.04}', 4), ('test.fail', '{0.2,0.4,1.1}', 3)"))
    insert_jobs(raw_engine, 30, store_id="'shop-' || (g % 6)", batch_id="'import-' || (g % 3)",
                created_at="now() - interval '1 hour'", run_at="now() - make_interval(mins => g)")
    insert_jobs(raw_engine, 12, job_type="test.fail", status="'failed'", store_id="'shop-' || (g % 4)",
                attempts="3", completed_at="now() - make_interval(mins => g)",
                last_error="'HTTPError: 429 Too Many Requests for product ' || (1000 + g)")
    insert_jobs(raw_engine, 5, job_type="test.fail", status="'failed'", store_id="'shop-9'", attempts="1",
                completed_at="now()", last_error="'PermanentError: product ' || g || ' has no title'")
    insert_jobs(raw_engine, 8, status="'completed'", store_id="'shop-1'", batch_id="'import-0'",
                started_at="now() - interval '2 min'", completed_at="now() - interval '1 min'",
                result="'{\"ok\": true}'")
    env = {"DASHBOARD_SECRET": OPERATOR_SECRET, "DASHBOARD_READONLY_SECRET": READONLY_SECRET,
           "DASHBOARD_SESSION_KEY": SESSION_KEY}
    with Gunicorn(database_url, workers=1, threads=4, env=env) as gunicorn:
        yield gunicorn
    assert OPERATOR_SECRET not in gunicorn.output() and READONLY_SECRET not in gunicorn.output()


@pytest.fixture(scope="module")
def browser(server):
    driver = start_browser()
    yield driver
    stop_browser(driver)


def _by_id(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _all(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _click(driver, element_id):
    """Click something that loads a page, and wait until the new page is there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    _by_id(driver, element_id).click()
    WebDriverWait(driver, 15).until(lambda d: _gone(old))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _gone(element):
    """The element left the document. Chromium answers a detached node either as a stale reference or, while the
    next page is being built, as "Node with given id does not belong to the document" (an unknown error)."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def _shot(driver, name):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def _sign_in(driver, base, secret):
    driver.get(base + "/dashboard/")
    assert "/dashboard/signin" in driver.current_url
    _by_id(driver, "secret").send_keys(secret)
    _click(driver, "signin-button")


def test_sign_in_and_the_overview_shows_real_data(browser, server):
    _sign_in(browser, server.base, "not-the-secret-at-all")
    assert "opens nothing" in _by_id(browser, "signin-error").text
    _shot(browser, "signin")
    _sign_in(browser, server.base, OPERATOR_SECRET)
    assert browser.current_url.endswith("/dashboard/")
    assert _by_id(browser, "role").text == "operator"
    assert _by_id(browser, "due").text == "30"
    assert len(_all(browser, "#chart-hour rect.completed")) > 30  # a bar for most of the last hour's minutes
    assert _all(browser, "#chart-day rect.failed")
    assert "web-1-1-a1b2" in _by_id(browser, "ticks").text
    assert "test.fail" in _by_id(browser, "by-type").text and "test.fail" in _by_id(browser, "runtimes").text
    assert "tokens charged" in _by_id(browser, "limiter").text
    cookie = browser.get_cookie("jobprocessor_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert browser.execute_script("return document.cookie").find("jobprocessor_dashboard") < 0
    _shot(browser, "overview")


def test_the_overview_refreshes_itself(browser, server):
    browser.get(server.base + "/dashboard/?refresh=1")
    first = _by_id(browser, "main").get_attribute("data-refreshed")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _by_id(browser, "main").get_attribute("data-refreshed") == first:
        time.sleep(0.2)
    assert _by_id(browser, "main").get_attribute("data-refreshed") != first


@pytest.mark.parametrize("path,marker,expected", [
    ("/dashboard/stores", "stores", "shop-5"),
    ("/dashboard/stores/shop-1", "store-id", "shop-1"),
    ("/dashboard/jobs", "job-filters", "status"),
    ("/dashboard/jobs/31", "last-error", "HTTPError: 429"),
    ("/dashboard/failed", "failed-groups", "HTTPError: N Too Many Requests for product N"),
    ("/dashboard/batches", "batches", "import-0"),
    ("/dashboard/schedules", "schedules", "nightly-export"),
    ("/dashboard/controls", "pauses", "Nothing is paused"),
    ("/dashboard/actions", "actions", "Nothing done yet"),
])
def test_every_page_renders_real_data(browser, server, path, marker, expected):
    browser.get(server.base + path)
    assert expected in _by_id(browser, marker).text
    assert not _all(browser, "#error-message")
    _shot(browser, path.strip("/").replace("/", "-").replace("dashboard-", "") or "overview")


def test_filter_jobs(browser, server):
    browser.get(server.base + "/dashboard/jobs")
    from selenium.webdriver.support.ui import Select

    Select(_by_id(browser, "f-status")).select_by_value("failed")
    _by_id(browser, "f-error").send_keys("too many")
    _click(browser, "apply-filters")
    rows = _all(browser, "table.jobs tbody tr")
    assert len(rows) == 12 and all("failed" in row.text and "429" in row.text for row in rows)
    assert "status=failed" in browser.current_url


def test_bulk_retry_shows_the_dry_run_count_and_asks_first(browser, server, raw_engine):
    browser.get(server.base + "/dashboard/jobs?status=failed&type=test.fail")
    _click(browser, "bulk-retry")
    assert _by_id(browser, "matched").text == "17"
    assert "test.fail" in _by_id(browser, "bulk-filter").text
    with raw_engine.connect() as conn:  # the dry run changed nothing
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'failed'")).scalar_one() == 17
    _shot(browser, "confirm")
    _click(browser, "confirm")
    assert "/dashboard/actions" in browser.current_url
    assert "done" in _by_id(browser, "done").text
    assert _all(browser, "#action-1 .changed")[0].text == "17"
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'failed'")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE type = 'test.fail' AND status = 'pending' "
                                 "AND attempts = 0")).scalar_one() == 17
    _shot(browser, "actions")


def _post_from_page(browser, path, with_token):
    """A POST sent by script from the dashboard's own page (same origin, with the session cookie)."""
    return browser.execute_async_script("""
        const [path, withToken, done] = arguments;
        const body = new URLSearchParams();
        if (withToken) { body.set('csrf_token', document.querySelector('input[name=csrf_token]').value); }
        fetch(path, {method: 'POST', body, credentials: 'same-origin', redirect: 'manual'})
          .then(r => done(r.status), e => done(String(e)));""", path, with_token)


def test_a_post_without_the_csrf_token_is_refused(browser, server, raw_engine):
    browser.get(server.base + "/dashboard/jobs/1")
    assert _post_from_page(browser, "/dashboard/jobs/1/cancel", with_token=False) == 403
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = 1")).scalar_one() == "pending"
    # the same form, its token emptied: the page says why
    browser.execute_script("document.querySelector('#cancel-job').form.csrf_token.value = ''; "
                           "document.querySelector('#cancel-job').form.removeAttribute('data-confirm');")
    _click(browser, "cancel-job")
    assert "CSRF" in _by_id(browser, "error-message").text
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = 1")).scalar_one() == "pending"


def test_sign_out(browser, server):
    browser.get(server.base + "/dashboard/")
    _click(browser, "signout")
    assert "/dashboard/signin" in browser.current_url
    browser.get(server.base + "/dashboard/jobs")
    assert "/dashboard/signin" in browser.current_url


def test_a_read_only_session_cannot_act(browser, server, raw_engine):
    _sign_in(browser, server.base, READONLY_SECRET)
    assert _by_id(browser, "role").text == "read-only"
    for path in ("/dashboard/jobs?status=pending", "/dashboard/failed", "/dashboard/jobs/1", "/dashboard/schedules"):
        browser.get(server.base + path)
        buttons = [b.get_attribute("id") or b.text for b in _all(browser, "main button, main a.button")]
        assert buttons in ([], ["apply-filters", "Clear"], ["Show"]) or all(
            b in ("apply-filters", "Clear", "Show") for b in buttons), (path, buttons)
    browser.get(server.base + "/dashboard/jobs/1")
    assert _post_from_page(browser, "/dashboard/jobs/1/cancel", with_token=True) == 403
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = 1")).scalar_one() == "pending"
    _click(browser, "signout")


def _tick(server) -> dict:
    import requests

    response = requests.post(server.base + "/process-pending", json={"limit": 100, "budget_s": 5}, headers=AUTH,
                             timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _count(raw_engine, where: str) -> int:
    with raw_engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM jobs WHERE {where}")).scalar_one()


def test_a_type_paused_in_the_dashboard_is_skipped_by_the_next_tick(browser, server, raw_engine):
    failing = "type = 'test.fail' AND status = 'pending' AND attempts = 0"
    assert _count(raw_engine, failing) == 17  # due: the bulk retry above put them back
    _sign_in(browser, server.base, OPERATOR_SECRET)
    browser.get(server.base + "/dashboard/controls")
    _by_id(browser, "pause-type").send_keys("test.fail")
    _click(browser, "pause-button")
    assert "test.fail" in _by_id(browser, "pauses").text
    _shot(browser, "controls")
    summary = _tick(server)
    assert summary["claimed"] == _count(raw_engine, "type = 'test.echo' AND status = 'completed' "
                                                   "AND completed_at > now() - interval '1 minute'") > 0
    assert _count(raw_engine, failing) == 17  # the tick left every paused job alone
    with raw_engine.connect() as conn:
        job_id, pause_id = conn.execute(text("SELECT (SELECT min(id) FROM jobs WHERE type = 'test.fail'), "
                                             "(SELECT id FROM job_pauses)")).one()
    browser.get(server.base + f"/dashboard/jobs/{job_id}")
    assert "paused" in _by_id(browser, "wait-reasons").text and "type test.fail" in _by_id(browser, "wait-reasons").text
    browser.get(server.base + "/dashboard/controls")
    _click(browser, f"resume-{pause_id}")
    assert "Nothing is paused" in _by_id(browser, "pauses").text
    _tick(server)
    assert _count(raw_engine, failing) == 0  # resumed: the next tick ran them (they fail: retried, attempt spent)
