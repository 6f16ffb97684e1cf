"""GET /metrics: Prometheus text, behind the secret; counters by type, handler durations, queue state from the
database at scrape time, pool figures, registered scrape collectors; summed over gunicorn workers."""
from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from jobprocessor import metrics
from jobprocessor.processor import process_pending
from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH, SECRET


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.get_data(as_text=True))


def test_metrics_needs_the_secret(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-secret-0123456789"}).status_code == 401


def test_counters_by_type_and_handler_durations(app, client, engine, settings):
    before = scrape(client)
    insert_jobs(engine, 3, job_type="test.echo")
    insert_jobs(engine, 2, job_type="test.permanent")
    insert_jobs(engine, 1, job_type="test.fail")
    insert_jobs(engine, 1, job_type="test.fail", attempts="2")  # its last attempt
    process_pending(engine, settings, limit=20, budget_s=10, app=app)
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("jobprocessor_jobs_claimed_total", type="test.echo") == 3
    assert delta("jobprocessor_jobs_claimed_total", type="test.fail") == 2
    assert delta("jobprocessor_jobs_completed_total", type="test.echo") == 3
    assert delta("jobprocessor_jobs_failed_total", type="test.permanent") == 2
    assert delta("jobprocessor_jobs_failed_total", type="test.fail") == 1
    assert delta("jobprocessor_jobs_retried_total", type="test.fail") == 1
    assert delta("jobprocessor_handler_duration_seconds_count", type="test.echo") == 3
    assert delta("jobprocessor_handler_duration_seconds_bucket", type="test.echo", le="+Inf") == 3


def test_queue_state_comes_from_the_database_at_scrape_time(client, engine):
    insert_jobs(engine, 4, created_at="now() - interval '100 seconds'")
    insert_jobs(engine, 2, status="'completed'", started_at="now()", completed_at="now()")
    scraped = scrape(client)
    assert value(scraped, "jobprocessor_queue_jobs", status="pending") == 4
    assert value(scraped, "jobprocessor_queue_jobs", status="completed") == 2
    assert value(scraped, "jobprocessor_queue_jobs", status="running") == 0
    assert 99 < value(scraped, "jobprocessor_queue_oldest_age_seconds", status="pending") < 200
    insert_jobs(engine, 1, run_at="now() - interval '10 minutes'")
    assert value(scrape(client), "jobprocessor_queue_alerts_firing", alert="pending_too_old", severity="warning") == 1


def test_pool_figures(client, engine, settings):
    held = engine.connect()
    try:
        scraped = scrape(client)
        assert value(scraped, "jobprocessor_db_pool_size") == engine.pool.size() == settings.DB_POOL_MAX
        assert value(scraped, "jobprocessor_db_pool_checked_out") >= 1
        helps = client.get("/metrics", headers=AUTH).get_data(as_text=True)
        assert re.search(r"^# HELP jobprocessor_db_pool_size .*DB_POOL_MAX", helps, re.M)
    finally:
        held.close()


def test_pool_gauges_follow_checkouts_and_checkins(app, engine):
    engine.dispose()
    first, second = engine.connect(), engine.connect()
    assert metrics.POOL_CHECKED_OUT._value.get() == 2
    first.close()
    assert (metrics.POOL_CHECKED_OUT._value.get(), metrics.POOL_IDLE._value.get()) == (1, 1)
    second.close()
    assert (metrics.POOL_CHECKED_OUT._value.get(), metrics.POOL_IDLE._value.get()) == (0, 2)


def test_registered_scrape_collectors_are_called_per_scrape_and_isolated(client):
    calls = []

    def limiter():
        calls.append(1)
        family = GaugeMetricFamily("jobprocessor_ratelimit_used", "test figure", labels=["window"])
        family.add_metric(["rpm"], 42)
        yield family

    def broken():
        raise RuntimeError("limiter table missing")
        yield  # pragma: no cover

    metrics.register_scrape_collector(limiter)
    metrics.register_scrape_collector(limiter)  # twice: still once
    metrics.register_scrape_collector(broken)
    try:
        scraped = scrape(client)
        assert value(scraped, "jobprocessor_ratelimit_used", window="rpm") == 42 and len(calls) == 1
        assert value(scraped, "jobprocessor_scrape_collector_errors") == 1
    finally:
        metrics.unregister_scrape_collector(limiter)
        metrics.unregister_scrape_collector(broken)
    assert value(scrape(client), "jobprocessor_ratelimit_used", window="rpm") == 0


@pytest.mark.e2e
def test_counters_are_summed_over_gunicorn_workers_and_survive_a_dead_worker(database_url, clean_db):
    import requests

    insert_jobs(clean_db, 24, job_type="test.sleep", payload="'{\"seconds\": 0.3}'")
    with Gunicorn(database_url, workers=2, threads=1) as server:
        pids = set()
        lock = threading.Lock()

        def caller():
            for _ in range(6):
                response = requests.post(server.base + "/process-pending?limit=2&budget_s=10", headers=AUTH,
                                         timeout=30)
                assert response.status_code == 200, response.text
                with lock:
                    pids.add(response.json()["worker"].split(":")[1])

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(pids) == 2, "both workers must have processed jobs for this test to mean anything"

        def scrape_http() -> dict:
            response = requests.get(server.base + "/metrics", headers={"X-Cron-Secret": SECRET}, timeout=10)
            assert response.status_code == 200
            return samples(response.text)

        for _ in range(4):  # whichever worker answers, the totals are the sum over both
            scraped = scrape_http()
            assert value(scraped, "jobprocessor_jobs_completed_total", type="test.sleep") == 24
            assert value(scraped, "jobprocessor_jobs_claimed_total", type="test.sleep") == 24
            assert value(scraped, "jobprocessor_queue_jobs", status="completed") == 24
            assert value(scraped, "jobprocessor_db_pool_size") == 2 * 30  # DB_POOL_MAX per live worker

        os.kill(int(sorted(pids)[0]), signal.SIGKILL)  # a worker dies; the master replaces it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                scraped = scrape_http()
                if value(scraped, "jobprocessor_db_pool_size") == 2 * 30:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        assert value(scraped, "jobprocessor_jobs_completed_total", type="test.sleep") == 24  # kept
        assert value(scraped, "jobprocessor_db_pool_size") == 2 * 30  # the dead worker's live gauge is gone


def test_metrics_include_the_shared_openai_limiter(client):
    from tests.support.settings import AUTH

    body = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert "jobprocessor_openai_ratelimit_" in body
    assert not re.search(r"^jobprocessor_scrape_collector_errors [1-9]", body, re.M)  # the collector did not fail


def test_a_runs_outcomes_are_counted_as_one_observation_per_job_would_count_them():
    seconds = [0.001, 0.005, 0.0051, 0.3, 0.3, 7.0, 1000.0]  # on a bound, between bounds, past the last one
    for value in seconds:
        metrics._child(metrics.HANDLER_SECONDS, "test.one_by_one").observe(value)
    metrics._child(metrics.JOBS_COMPLETED, "test.one_by_one").inc(5)
    metrics._child(metrics.JOBS_FAILED, "test.one_by_one").inc(2)
    metrics.observe_outcomes("test.batched", {"succeeded": 5, "failed": 2}, seconds)

    def figures(job_type):
        found = {}
        for metric in (metrics.HANDLER_SECONDS, metrics.JOBS_COMPLETED, metrics.JOBS_FAILED):
            for family in metric.collect():
                for sample in family.samples:
                    if sample.labels.get("type") == job_type and not sample.name.endswith("_created"):
                        found[(sample.name, sample.labels.get("le"))] = sample.value
        return found

    one_by_one, batched = figures("test.one_by_one"), figures("test.batched")
    total = ("jobprocessor_handler_duration_seconds_sum", None)
    assert batched.pop(total) == pytest.approx(one_by_one.pop(total))  # added in another order
    assert batched == one_by_one  # every bucket (+Inf included), the count, the counters
    assert one_by_one[("jobprocessor_handler_duration_seconds_count", None)] == len(seconds)
    assert one_by_one[("jobprocessor_handler_duration_seconds_bucket", "0.005")] == 2  # 0.005 is <= 0.005
