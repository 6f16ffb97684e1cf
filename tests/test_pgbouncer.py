"""The app behind PgBouncer in transaction pooling mode (what Supabase's pooler and most managed PostgreSQL give
apps that scale out): a real PgBouncer (Debian's `pgbouncer`) started here, between a real gunicorn and the test
database, over TCP on 127.0.0.1 (the embedded server has no socket directory others may enter). The enqueue path
(POST /jobs, idempotent repeats) and the drain path (concurrent /process-pending calls) run through it: every job
runs once, and PgBouncer's own counters show the transactions went through it. In transaction mode a server
connection is another client's after each transaction, so anything that leans on session state (SET without
LOCAL, session advisory locks, LISTEN, prepared statements kept across transactions) would break here.

Slow-marked (about 10 s): a PgBouncer, a gunicorn with two workers, 600 jobs."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import AUTH, Gunicorn, free_port
from tests.system_packages import binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOBS = 600


@pytest.fixture
def pgbouncer(database_url):
    executable = binary("pgbouncer", "pgbouncer")
    server = make_url(database_url)
    port = free_port()
    # a folder the unprivileged user pgbouncer runs as (it refuses root) may read and write
    folder = Path(tempfile.mkdtemp(prefix="jobprocessor-pgbouncer-"))
    os.chmod(folder, 0o777)
    (folder / "userlist.txt").write_text(f'"{server.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(f"""
[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'userlist.txt'}
admin_users = {server.username}
pool_mode = transaction
default_pool_size = 8
max_client_conn = 500
logfile = {folder / 'pgbouncer.log'}
pidfile = {folder / 'pgbouncer.pid'}
""")
    for name in ("userlist.txt", "pgbouncer.ini"):
        os.chmod(folder / name, 0o644)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([executable, *user, str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = server.set(port=port).render_as_string(hide_password=False)
    for _ in range(100):
        try:
            psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                             connect_timeout=2).close()
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None:
                raise RuntimeError("pgbouncer did not start: " + proc.stderr.read().decode())
            time.sleep(0.05)
    else:
        raise RuntimeError("pgbouncer did not start")
    try:
        yield url, port, server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def pgbouncer_transactions(port: int, user: str, database: str) -> int:
    """Transactions PgBouncer has carried for `database` (its admin console, SHOW STATS)."""
    admin = psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="pgbouncer")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SHOW STATS")
            columns = [c.name for c in cur.description]
            rows = [dict(zip(columns, row)) for row in cur.fetchall()]
    finally:
        admin.close()
    return sum(int(row["total_xact_count"]) for row in rows if row["database"] == database)


def test_enqueue_and_drain_through_pgbouncer_in_transaction_mode(pgbouncer, clean_db):
    url, port, server = pgbouncer
    before = pgbouncer_transactions(port, server.username, server.database)
    with Gunicorn(url, workers=2, threads=4, env={"DB_POOL_MAX": "10", "DB_POOL_MIN": "2"}) as app:
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
    assert pgbouncer_transactions(port, server.username, server.database) - before > JOBS // 200 + len(results)
