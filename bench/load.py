"""Load (`make chaos`): 50 concurrent cron callers hitting POST /process-pending for 60 s against a 4-worker
gunicorn, first with an empty queue, then with 50,000 due jobs. Prints latency percentiles, status codes, jobs
done, database connections seen in pg_stat_activity and the connection-pool figures measured inside the workers
(bench/pool_probe.py: checkout waits, most connections checked out / in overflow). Exits non-zero on any non-200
answer or a pool checkout wait past --max-wait-ms.

    CHAOS_DATABASE_URL=postgresql://... python bench/load.py [--seconds 60] [--callers 50] [--jobs 50000]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.setup_db import fresh_database
from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_phase(name: str, database_url: str, engine, args, jobs: int) -> dict:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs RESTART IDENTITY"))
    if jobs:
        insert_jobs(engine, jobs, "test.echo", store_id="'store-' || (g % 100)", payload="'{\"n\": 1}'::jsonb")
    probe_dir = Path(tempfile.mkdtemp(prefix="pool-probe-"))
    server = Gunicorn(database_url, workers=args.workers, threads=args.threads)
    server.env.update(JOBPROCESSOR_HANDLERS="tests.support.job_handlers,bench.pool_probe",
                      POOL_PROBE_DIR=str(probe_dir), LOG_LEVEL="WARNING")
    if args.pool_min is not None:
        server.env["DB_POOL_MIN"] = str(args.pool_min)
    latencies, statuses, claimed, succeeded, errors = [], Counter(), [0], [0], Counter()
    connections = []
    lock = threading.Lock()
    with server:
        stop_at = time.monotonic() + args.seconds
        stop = threading.Event()

        def caller():
            http = requests.Session()
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    response = http.post(server.base + "/process-pending", headers=AUTH, timeout=120)
                except requests.RequestException as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        body = response.json()
                        claimed[0] += body["claimed"]
                        succeeded[0] += body["succeeded"]

        def sampler():
            while not stop.wait(0.5):
                with engine.connect() as conn:
                    connections.append(conn.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jobprocessor' "
                        "AND datname = current_database()")).scalar_one())

        threads = [threading.Thread(target=caller) for _ in range(args.callers)]
        watcher = threading.Thread(target=sampler)
        began = time.monotonic()
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed_s = time.monotonic() - began
        stop.set()
        watcher.join()
        time.sleep(1.5)  # the probes write every second
        pools = [json.loads(path.read_text()) for path in probe_dir.glob("pool-*.json")]
    waits = [w for pool in pools for w in pool["waits_ms"]]
    with engine.connect() as conn:
        left = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY 1")).all())
    return {
        "phase": name, "callers": args.callers, "db_pool_min": args.pool_min or "default (2)",
        "seconds": round(elapsed_s, 1), "gunicorn_workers": args.workers,
        "gunicorn_threads": args.threads, "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed_s, 1), "statuses": dict(statuses),
        "client_errors": dict(errors),
        "latency_ms": {"p50": round(percentile(latencies, 0.50), 1), "p90": round(percentile(latencies, 0.90), 1),
                       "p99": round(percentile(latencies, 0.99), 1), "max": round(max(latencies, default=0), 1),
                       "mean": round(statistics.fmean(latencies), 1) if latencies else 0},
        "jobs_due_at_start": jobs, "jobs_claimed": claimed[0], "jobs_succeeded": succeeded[0],
        "jobs_per_s": round(succeeded[0] / elapsed_s, 1), "jobs_left": left,
        "db_connections_max": max(connections, default=0),
        "pool": {"workers_reporting": len(pools), "checkouts": sum(p["checkouts"] for p in pools),
                 "connections_opened": sum(p["connects"] for p in pools),
                 "max_checked_out_per_worker": max((p["max_checked_out"] for p in pools), default=0),
                 "max_overflow_per_worker": max((p["max_overflow"] for p in pools), default=0),
                 "pool_size": max((p["pool_size"] for p in pools), default=0),
                 "wait_ms_p50": round(percentile(waits, 0.50), 3), "wait_ms_p99": round(percentile(waits, 0.99), 3),
                 "wait_ms_max": round(max(waits, default=0), 1),
                 "waits_over_100ms": sum(1 for w in waits if w > 100)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (the project default)")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--pool-min", type=int, default=None, help="DB_POOL_MIN for the server (default: its own)")
    parser.add_argument("--max-wait-ms", type=float, default=1000, help="a checkout wait past this is a failure")
    args = parser.parse_args()
    database_url = os.environ["CHAOS_DATABASE_URL"]
    engine = fresh_database(database_url, audit=False)
    results = [run_phase("empty queue", database_url, engine, args, 0),
               run_phase(f"{args.jobs} due jobs", database_url, engine, args, args.jobs)]
    print(json.dumps(results, indent=2))
    bad = [r["phase"] for r in results
           if set(r["statuses"]) - {200} or r["client_errors"] or r["pool"]["wait_ms_max"] > args.max_wait_ms]
    if bad:
        print(f"FAILED: errors or pool waits past {args.max_wait_ms} ms in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
