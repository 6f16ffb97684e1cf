"""End to end: a real gunicorn on loopback, hit with real HTTP by concurrent cron callers."""
import threading

import pytest
import requests
from sqlalchemy import text

from tests.support.db import drain_until_idle, fetch_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH

pytestmark = pytest.mark.e2e


def test_cron_callers_drain_jobs_enqueued_over_http(database_url, clean_db):
    with Gunicorn(database_url, workers=2, threads=4) as server:
        jobs = [{"type": "test.record", "store_id": f"store-{i % 5}"} for i in range(600)]
        response = requests.post(server.base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=30)
        assert response.status_code == 201 and response.json()["created"] == 600

        summaries, errors = [], []

        def tick():
            r = requests.post(server.base + "/process-pending?limit=40&budget_s=20", headers=AUTH, timeout=30)
            r.raise_for_status()
            return r.json()

        def cron_caller():
            try:
                summaries.extend(drain_until_idle(tick, idle_calls=2))
            except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
                errors.append(exc)

        callers = [threading.Thread(target=cron_caller) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(120)
        assert not errors
        assert sum(s["succeeded"] for s in summaries) == 600
        with clean_db.connect() as conn:
            assert conn.execute(text("SELECT count(*), count(DISTINCT job_id) FROM job_executions")).one() == \
                (600, 600)
        assert not fetch_jobs(clean_db, "status <> 'completed'")

        # Vercel Cron sends GET with the Bearer header
        assert requests.get(server.base + "/process-pending", headers=AUTH, timeout=10).json()["claimed"] == 0
        unauthorized = requests.post(server.base + "/process-pending", timeout=10)
        assert unauthorized.status_code == 401 and unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
        too_big = requests.post(server.base + "/jobs", data=b"x" * (5 * 1024 * 1024), headers={
            **AUTH, "Content-Type": "application/json"}, timeout=10)
        assert too_big.status_code == 413
        assert requests.get(server.base + "/healthz", timeout=5).json()["status"] == "ok"
        assert "test-secret" not in server.output()  # the secret never reaches the logs
