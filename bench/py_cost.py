"""The Python side's CPU per job of a drain, in one process (issue 11): N demo.noop jobs drained by `callers`
threads (one gunicorn worker's share) calling process_pending(limit=1000) until a call claims nothing, as the
endpoint would (no HTTP).

    DATABASE_URL=... .venv/bin/python bench/py_cost.py --jobs 20000 --rounds 3 [--profile out.pstats]

Prints, per round, this process's CPU seconds (user + system, all threads; PostgreSQL is another process) per job
and the wall rate. Prometheus runs in multiprocess mode, as under gunicorn. A quicker, steadier figure than a
gunicorn drain's /proc split for comparing changes to the per-job Python work; the end-to-end figures stay
bench/drain_versions.py and bench/drain_fifo.py.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="py-cost-metrics-"))
os.environ.setdefault("JOBPROCESSOR_HANDLERS", "jobprocessor.handlers.demo")
os.environ.setdefault("CRON_SECRET", "py-cost-bench-secret-0123456789abcdef")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("JOBS_IDLE_GRACE_S", "0")  # a call whose queue ran dry answers at once

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.drain import JobsTable, libpq_url  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=2, help="2: one gunicorn worker's share of 4 callers")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", help="write a yappi CPU profile (all threads) of the last round here (pstats; "
                                          "pip install yappi)")
    args = parser.parse_args()
    os.environ["JOBS_CONCURRENCY"] = str(args.concurrency)

    from jobprocessor import create_app
    from jobprocessor.extensions import db
    from jobprocessor.processor import process_pending

    app = create_app()
    settings = app.extensions["jobprocessor"].settings
    jobs = JobsTable(libpq_url(os.environ["DATABASE_URL"]))

    def caller(claimed: list) -> None:
        with app.app_context():
            while True:
                summary = process_pending(db.engine, settings, limit=args.limit, budget_s=60, app=app)
                if summary.busy:  # this process runs its JOBS_MAX_TICKS_PER_PROCESS calls already
                    time.sleep(0.005)
                    continue
                claimed.append(summary.claimed)
                if summary.claimed == 0:
                    return

    def one_round() -> tuple[float, float, int]:
        jobs.fill(args.jobs)
        claimed: list = []
        threads = [threading.Thread(target=caller, args=(claimed,)) for _ in range(args.callers)]
        cpu0, t0 = cpu_s(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
        problems = jobs.check_drained(args.jobs)
        if problems:
            raise SystemExit(problems[0])
        return cpu, wall, len(claimed)

    with app.app_context():
        wanted, args.jobs = args.jobs, 2000
        one_round()  # warm-up: imports, pool, estimates
        args.jobs = wanted
    figures = []
    for round_no in range(1, args.rounds + 1):
        profiler = None
        if args.profile and round_no == args.rounds:
            import yappi
            yappi.set_clock_type("cpu")
            yappi.start()
            profiler = yappi
        cpu, wall, calls = one_round()
        if profiler is not None:
            profiler.stop()
            profiler.get_func_stats().save(args.profile, type="pstat")
        figures.append(1e6 * cpu / args.jobs)
        print(f"round {round_no}: {1e6 * cpu / args.jobs:6.1f} us CPU/job  {args.jobs / wall:8,.0f} jobs/s  "
              f"({calls} calls, {os.getloadavg()[0]:.1f} load)", flush=True)
    print(f"us CPU/job: min {min(figures):.1f}, median {statistics.median(figures):.1f}")
    jobs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
