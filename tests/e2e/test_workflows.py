"""End to end through a real gunicorn: a 5-stage store pipeline enqueued over HTTP and run by concurrent cron
callers -- import, then translate each product (fan-out), then rewrite each (optimize, one per translation),
then export once every rewrite is done (fan-in over the batch), and the batch's on_complete notification."""
from __future__ import annotations

import threading
import time

import pytest
import requests
from sqlalchemy import text

from tests.support.db import fetch_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH

pytestmark = pytest.mark.e2e
PRODUCTS = 12


def test_a_store_pipeline_runs_in_order_through_gunicorn(database_url, clean_db):
    with Gunicorn(database_url, workers=2, threads=4) as server:
        def post(body):
            response = requests.post(server.base + "/jobs", json=body, headers=AUTH, timeout=30)
            assert response.status_code == 201, response.text
            return response.json()

        store = {"store_id": "store-42"}
        first = post({"jobs": [{"type": "wf.stage", "payload": {"stage": "import", "seconds": 0.2}, **store}] + [
            {"type": "wf.stage", "payload": {"stage": "translate", "product": p, "seconds": 0.05},
             "depends_on": [{"index": 0}], "batch_id": "translate-42", **store} for p in range(PRODUCTS)]})
        import_id, translate_ids = first["ids"][0], first["ids"][1:]
        second = post({"jobs": [{"type": "wf.stage", "payload": {"stage": "optimize", "product": p, "seconds": 0.05},
                                 "depends_on": [translate_ids[p]], "batch_id": "optimize-42", **store}
                                for p in range(PRODUCTS)],
                       "on_complete": {"type": "wf.stage", "payload": {"stage": "notify"}, **store}})
        optimize_ids, notify_id = second["ids"], second["on_complete"]["id"]
        export_id = post({"type": "wf.stage", "payload": {"stage": "export"}, "depends_on_batch": "optimize-42",
                          **store})["id"]
        everything = [import_id, *translate_ids, *optimize_ids, notify_id, export_id]
        waiting = requests.get(server.base + "/jobs?status=waiting&limit=100", headers=AUTH, timeout=10).json()
        assert len(waiting["jobs"]) == len(everything) - 1  # all but the import

        errors, done = [], threading.Event()

        def cron_caller():
            try:
                while not done.is_set():
                    r = requests.post(server.base + "/process-pending?limit=20&budget_s=5", headers=AUTH, timeout=30)
                    r.raise_for_status()
                    if r.json()["claimed"] == 0:
                        time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
                errors.append(exc)

        callers = [threading.Thread(target=cron_caller) for _ in range(3)]
        for t in callers:
            t.start()
        deadline = time.monotonic() + 60
        while fetch_jobs(clean_db, "status <> 'completed'") and time.monotonic() < deadline:
            time.sleep(0.1)
        done.set()
        for t in callers:
            t.join(60)
        assert not errors
        assert not fetch_jobs(clean_db, "status <> 'completed'")

        with clean_db.connect() as conn:
            runs = dict(conn.execute(text("SELECT job_id, count(*) FROM job_executions GROUP BY job_id")).all())
            # no job's first run started before one of its parents completed
            early = conn.execute(text("""
                SELECT d.child_id, d.parent_id FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
                JOIN (SELECT job_id, min(at) AS at FROM job_executions GROUP BY job_id) e ON e.job_id = d.child_id
                WHERE e.at < p.completed_at""")).all()
        assert runs == {job_id: 1 for job_id in everything}
        assert early == []
        jobs = {j["id"]: j for j in fetch_jobs(clean_db)}
        assert max(jobs[i]["completed_at"] for i in optimize_ids) <= jobs[export_id]["started_at"]
        assert jobs[notify_id]["payload"]["batch"] == {
            "batch_id": "optimize-42", "total": PRODUCTS,
            "counts": {"waiting": 0, "pending": 0, "running": 0, "completed": PRODUCTS, "failed": 0, "cancelled": 0}}
        detail = requests.get(server.base + f"/jobs/{export_id}", headers=AUTH, timeout=10).json()
        assert detail["parents_total"] == PRODUCTS and all(p["status"] == "completed" for p in detail["parents"])
        batch = requests.get(server.base + "/batches/optimize-42", headers=AUTH, timeout=10).json()
        assert batch["done"] and batch["on_complete"] == {"id": notify_id, "status": "completed"}
