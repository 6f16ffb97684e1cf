"""The app behind PgBouncer in transaction pooling mode (what Supabase's pooler and most managed PostgreSQL give
apps that scale out): a real PgBouncer (Debian's `pgbouncer`) started here, between a real gunicorn and the test
database, over TCP on 127.0.0.1 (the embedded server has no socket directory others may enter). The enqueue path
(POST /jobs, idempotent repeats) and the drain path (concurrent /process-pending calls) run through it: every job
runs once, and PgBouncer's own counters show the transactions went through it. In transaction mode a server
connection is another client's after each transaction, so anything that leans on session state (SET without
LOCAL, session advisory locks, LISTEN, prepared statements kept across transactions) would break here.

Slow-marked (about 10 s): a PgBouncer, a gunicorn with two workers, 600 jobs."""
from __future__ import annotations

import threading

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.support.gunicorn import Gunicorn, free_port
from tests.support.pgbouncer_runner import PgBouncer
from tests.support.settings import AUTH
from tests.support.system_packages import binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOBS = 600


@pytest.fixture
def pgbouncer(database_url):
    with PgBouncer(binary("pgbouncer", "pgbouncer"), database_url, free_port()) as bouncer:
        yield bouncer


def test_enqueue_and_drain_through_pgbouncer_in_transaction_mode(pgbouncer, clean_db):
    database = make_url(pgbouncer.url).database
    before = pgbouncer.transactions(database)
    with Gunicorn(pgbouncer.url, workers=2, threads=4, env={"DB_POOL_MAX": "10", "DB_POOL_MIN": "2"}) as app:
        batches = [[{"type": "test.record", "store_id": f"s{i % 7}", "idempotency_key": f"pgb-{i}"}
                    for i in range(start, start + 200)] for start in range(0, JOBS, 200)]
        for jobs in batches:
            response = requests.post(app.base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=30)
            assert response.status_code == 201 and response.json()["created"] == 200, response.text[:300]
        repeat = requests.post(app.base + "/jobs", json={"jobs": batches[0]}, headers=AUTH, timeout=30)
        assert repeat.status_code == 200 and repeat.json()["duplicates"] == 200

        results, errors = [], []

        def caller():
            try:
                for _ in range(30):
                    answer = requests.post(app.base + "/process-pending?budget_s=5&limit=150", headers=AUTH,
                                           timeout=30)
                    assert answer.status_code == 200, answer.text[:300]
                    results.append(answer.json())
                    with clean_db.connect() as conn:
                        if conn.execute(text("SELECT count(*) FROM jobs WHERE status <> 'completed'")).scalar() == 0:
                            return
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        callers = [threading.Thread(target=caller) for _ in range(3)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(120)
        assert errors == []
    with clean_db.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        runs = conn.execute(text("SELECT count(*), count(DISTINCT job_id) FROM job_executions")).one()
    assert statuses == {"completed": JOBS}
    assert tuple(runs) == (JOBS, JOBS)  # every job ran exactly once
    assert sum(r["claimed"] for r in results) >= JOBS
    assert pgbouncer.transactions(database) - before > JOBS // 200 + len(results)
