"""Scale-out (issue 12, docs/SCALING.md): 1, 2 and 4 app instances (each a gunicorn with the shipped defaults,
WEB_CONCURRENCY=2 x GUNICORN_THREADS=4) against ONE PostgreSQL, each instance ticked by its own cron callers, side
by side: jobs/s, and CPU seconds per 1,000 jobs of PostgreSQL and of the app, read from /proc (the embedded server's
postmaster and its backends, each gunicorn master and its workers).

    .venv/bin/python bench/scale_out.py [--instances 1,2,4] [--jobs 20000] [--workload noop,io] [--pgbouncer]
                                        [--rounds 2] [--out bench/results/scale_out.json]

Workloads: `noop` (demo.noop: the queue's own cost, the worst case for the database per job) and `io` (demo.sleep
of 20 ms: handlers that wait on an API, what most jobs do). --pgbouncer puts a PgBouncer in transaction mode between
every instance and PostgreSQL (Debian's pgbouncer). The database is `jobprocessor_scale` on the embedded server,
built by the migrations (the embedded server's processes are what it measures). On this 2-core machine the
instances and PostgreSQL share the cores: PostgreSQL's CPU per 1,000 jobs is what carries over to a real
deployment, jobs/s is what this machine gives.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from jobprocessor.config import normalise_database_url  # noqa: E402
from tests.support.gunicorn import Gunicorn, free_port  # noqa: E402
from tests.support.settings import AUTH  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
CALLERS_PER_INSTANCE = 2
WORKLOADS = {"noop": ("demo.noop", "'{}'"), "io": ("demo.sleep", "'{\"seconds\": 0.02}'")}


def _stat(pid: str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_of_tree(root: int) -> float:
    """CPU seconds of a process and its children, live or reaped (what it collected from children that ended):
    a gunicorn master and its workers; the postmaster and its backends, which come and go."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = _stat(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(pid) == root or int(fields[1]) == root:  # fields[1]: the parent's pid
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / TICKS


def database_url() -> str:
    from jobprocessor import devdb

    devdb.start()
    devdb.create_database("jobprocessor_scale")
    return devdb.url("jobprocessor_scale")


def migrate(url: str) -> None:
    from flask_migrate import upgrade

    from jobprocessor import create_app
    from tests.support.settings import make_settings

    engine = create_engine(normalise_database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    app = create_app(make_settings(url))
    with app.app_context():
        upgrade()


def run_once(url: str, app_url: str, instances: int, jobs: int, workload: str, postmaster: int) -> dict:
    job_type, payload = WORKLOADS[workload]
    engine = create_engine(normalise_database_url(url))
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_ticks, job_type_runtimes RESTART IDENTITY"))
        conn.execute(text(f"INSERT INTO jobs (type, payload, store_id) SELECT '{job_type}', {payload}, "
                          "'store-' || (g % 50) FROM generate_series(1, :n) AS g"), {"n": jobs})
        conn.execute(text("ANALYZE jobs"))
    servers = [Gunicorn(app_url, workers=2, threads=4) for _ in range(instances)]
    for server in servers:
        server.env.update(JOBPROCESSOR_HANDLERS="jobprocessor.handlers.demo", LOG_LEVEL="WARNING",
                          JOBS_IDLE_GRACE_S="1")
        server.__enter__()
    try:
        done = threading.Event()
        calls, errors = [0], []

        def caller(base: str) -> None:
            session = requests.Session()
            while not done.is_set():
                try:
                    answer = session.post(base + "/process-pending?budget_s=30", headers=AUTH, timeout=60)
                    answer.raise_for_status()
                    calls[0] += 1
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    time.sleep(0.2)

        pg_before = cpu_of_tree(postmaster)
        app_before = sum(cpu_of_tree(s.proc.pid) for s in servers)
        started = time.monotonic()
        threads = [threading.Thread(target=caller, args=(s.base,), daemon=True)
                   for s in servers for _ in range(CALLERS_PER_INSTANCE)]
        for thread in threads:
            thread.start()
        while True:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM jobs WHERE status <> 'completed'")).scalar()
            if left == 0:
                break
            time.sleep(0.1)
        wall = time.monotonic() - started
        pg_cpu = cpu_of_tree(postmaster) - pg_before
        app_cpu = sum(cpu_of_tree(s.proc.pid) for s in servers) - app_before
        done.set()
        for thread in threads:
            thread.join(70)
    finally:
        for server in servers:
            server.__exit__()
        engine.dispose()
    return {"instances": instances, "workload": workload, "jobs": jobs, "wall_s": round(wall, 2),
            "jobs_per_s": round(jobs / wall), "pg_cpu_s_per_1000": round(pg_cpu / jobs * 1000, 3),
            "app_cpu_s_per_1000": round(app_cpu / jobs * 1000, 3), "pg_cores_busy": round(pg_cpu / wall, 2),
            "calls": calls[0], "errors": len(errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="1,2,4")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workload", default="noop,io")
    parser.add_argument("--pgbouncer", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_out.json"))
    args = parser.parse_args()
    from jobprocessor import devdb

    url = database_url()
    # the server's own processes (other embedded servers on this machine run as the same user)
    postmaster = int((devdb.data_dir() / "postmaster.pid").read_text().split()[0])
    migrate(url)
    bouncer = None
    app_url = url
    if args.pgbouncer:
        from tests.support.pgbouncer_runner import PgBouncer
        from tests.support.system_packages import SEARCH

        executable = next(f"{d}/pgbouncer" for d in SEARCH if os.access(f"{d}/pgbouncer", os.X_OK))
        bouncer = PgBouncer(executable, url, free_port(), pool_size=20).__enter__()
        app_url = bouncer.url
    results = []
    try:
        for workload in args.workload.split(","):
            for _ in range(args.rounds):
                for instances in map(int, args.instances.split(",")):
                    result = run_once(url, app_url, instances, args.jobs, workload, postmaster)
                    result["pgbouncer"] = bool(bouncer)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    finally:
        if bouncer is not None:
            bouncer.__exit__()
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
