"""Issue 11's end-to-end figure: N no-op jobs drained through gunicorn beside a plain FIFO loop on the same server.

    make bench  # once, for the database (or set DATABASE_URL), then:
    .venv/bin/python bench/drain_fifo.py --rounds 3 [--sql-loop]

Contenders, in interleaved rounds on the same PostgreSQL (DATABASE_URL), each from a freshly filled table (1 store:
store_id NULL, as bench/drain.py; or S stores, round-robin):

- plain FIFO loop: `processes` processes, each psycopg2, autocommit off: `UPDATE jobs ... WHERE id IN (SELECT id ...
  WHERE status = 'pending' AND run_at <= now() ORDER BY priority, run_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED)
  RETURNING id`, commit, then one batched completion (UPDATE ... WHERE id = ANY(...)), commit; until a claim is
  empty. No fairness, no leases kept, no handlers: the floor of what PostgreSQL does for a queue.
- with --sql-loop, the endpoint's SQL in that loop: the same processes running the endpoint's own claim and finish
  (bench.drain.sql_loop: queries.claim() and queries.finish(), every job completed) instead -- what the fair claim
  and the endpoint's statements cost the server, without the processor.
- endpoint: this checkout under gunicorn (2 workers x 4 threads, JOBS_CONCURRENCY=8, bench/drain.py's Server), 4
  callers POSTing /process-pending?limit=1000, and with no parameters (what a cron sends), until a call claims
  nothing. Both times are shown: to the last answer, and to the last job's completion (a call with no parameters
  stays JOBS_IDLE_GRACE_S after its queue ran dry, waiting for new work).

Issue 11's target: the endpoint at least half the plain loop. Medians of the rounds. Beside each rate: the CPU
per job of the database server's processes and of the client's -- gunicorn's (bench/drain.py CPUMeter), or the
plain loop's processes (getrusage of the children) -- the server's CPU includes the table's fill for neither side.
Both sides are CPU-bound on this machine's cores, so on a quiet machine the rates' ratio is about the ratio of the
CPU per job in all (printed as "CPU ratio"); a busy machine moves the rates (the plain loop's more), not that.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.drain import (JOB_TYPE, CPUMeter, JobsTable, Server, endpoint_drain, libpq_url, load, sql_loop,  # noqa: E402
                         warm_up)

PLAIN_CLAIM = """
UPDATE jobs SET status = 'running', locked_by = %(worker)s, locked_until = now() + interval '300 seconds',
                attempts = attempts + 1, started_at = now()
WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND run_at <= now()
             ORDER BY priority, run_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
PLAIN_COMPLETE = """
UPDATE jobs SET status = 'completed', result = 'null', completed_at = now(), locked_by = NULL, locked_until = NULL
WHERE id = ANY(%(ids)s) AND locked_by = %(worker)s
"""


def fill(jobs: JobsTable, n: int, stores: int) -> None:
    if stores <= 1:
        jobs.fill(n)
        return
    jobs.reset()
    with jobs.conn.cursor() as cur:
        cur.execute("INSERT INTO jobs (type, store_id) SELECT %s, 'store-' || (g %% %s) FROM generate_series(1, %s) g",
                    (JOB_TYPE, stores, n))
        cur.execute("ANALYZE jobs")


def _plain_worker(dsn: str, index: int, go, out, measured) -> None:
    conn = psycopg2.connect(dsn)
    worker = f"plain-fifo:{os.getpid()}:{index}"
    done = 0
    with conn.cursor() as cur:
        go.wait()
        while True:
            cur.execute(PLAIN_CLAIM, {"worker": worker})
            ids = [row[0] for row in cur.fetchall()]
            conn.commit()
            if not ids:
                break
            cur.execute(PLAIN_COMPLETE, {"ids": ids, "worker": worker})
            conn.commit()
            done += len(ids)
    out.put(done)
    measured.wait(60)  # the backend's CPU is read while it lives
    conn.close()


def _sql_worker(dsn: str, index: int, go, out, measured) -> None:
    """The endpoint's claim and finish in the plain loop's place (bench.drain.sql_loop)."""
    def finished(done: int) -> None:
        out.put(done)
        measured.wait(60)  # the backend's CPU is read while it lives

    sql_loop(dsn, f"sql-loop:{os.getpid()}:{index}", ready=go, finished=finished)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plain_drain(dsn: str, jobs: JobsTable, n: int, stores: int, processes: int, meter: CPUMeter,
                cpu: list, client_cpu: list, worker=_plain_worker) -> float:
    """Jobs per second; appends the server's CPU seconds per job to `cpu`, and its processes' to `client_cpu`."""
    fill(jobs, n, stores)
    children_before = children_cpu_s()
    go, measured = multiprocessing.Event(), multiprocessing.Event()
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(dsn, i, go, out, measured))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # connected, waiting
    server_before, _ = meter.read()
    started = time.perf_counter()
    go.set()
    done = sum(out.get() for _ in procs)
    seconds = time.perf_counter() - started
    cpu.append((meter.read()[0] - server_before) / n)
    measured.set()
    for proc in procs:
        proc.join()
    client_cpu.append((children_cpu_s() - children_before) / n)
    problems = jobs.check_drained(n)
    if done != n or problems:
        raise RuntimeError(f"{worker.__name__}: {done} done; {problems}")
    return n / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="1,100", help="store counts, comma-separated")
    parser.add_argument("--processes", type=int, default=2, help="processes of the plain loop")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sql-loop", action="store_true",
                        help="also the endpoint's claim and finish in the plain loop's place (no processor): how "
                             "much of the gap is the SQL")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    dsn = libpq_url(url)
    jobs = JobsTable(dsn)
    store_counts = [int(x) for x in args.stores.split(",")]
    loops = {"plain FIFO loop": _plain_worker}
    if args.sql_loop:
        loops["endpoint's SQL, plain loop"] = _sql_worker
    sides = [*loops, "endpoint, limit=1000", "endpoint, no parameters"]
    rates = {(s, k): [] for s in store_counts for k in sides}
    done = {(s, k): [] for s in store_counts for k in sides}
    server_cpu = {(s, k): [] for s in store_counts for k in sides}  # per job, seconds
    app_cpu = {(s, k): [] for s in store_counts for k in sides}
    meter = CPUMeter(jobs.conn)
    print(f"{args.jobs:,} {JOB_TYPE} jobs; plain loop {args.processes} processes; endpoint gunicorn 2x4, 4 callers, "
          f"JOBS_CONCURRENCY={args.concurrency}; {args.rounds} interleaved rounds; {load()}", flush=True)
    with Server(url, 2, 4, args.concurrency) as server:
        warm_up(server, jobs, 4)
        for round_no in range(1, args.rounds + 1):
            for stores in store_counts:
                for label, worker in loops.items():
                    rate = plain_drain(dsn, jobs, args.jobs, stores, args.processes, meter,
                                       server_cpu[(stores, label)], app_cpu[(stores, label)], worker)
                    rates[(stores, label)].append(rate)
                    done[(stores, label)].append(rate)
                    print(f"  round {round_no}, {stores:>3} stores: {label:<27} {rate:>9,.0f} jobs/s  "
                          f"(server {1e6 * server_cpu[(stores, label)][-1]:.0f}, "
                          f"client {1e6 * app_cpu[(stores, label)][-1]:.0f} us/job)  {load()}", flush=True)
                for label, limit in ((sides[-2], 1000), (sides[-1], None)):
                    fill(jobs, args.jobs, stores)
                    server_before, app_before = meter.read(server.proc.pid)
                    result = endpoint_drain(server, jobs, args.jobs, 4, limit, fill=False)
                    server_after, app_after = meter.read(server.proc.pid)
                    server_cpu[(stores, label)].append((server_after - server_before) / args.jobs)
                    app_cpu[(stores, label)].append((app_after - app_before) / args.jobs)
                    rates[(stores, label)].append(result.jobs_per_s)
                    done[(stores, label)].append(result.done_per_s)
                    print(f"  round {round_no}, {stores:>3} stores: {label:<27} {result.jobs_per_s:>9,.0f} jobs/s "
                          f"({result.calls} calls; {result.done_per_s:,.0f} jobs/s to the last completion; server "
                          f"{1e6 * server_cpu[(stores, label)][-1]:.0f}, "
                          f"gunicorn {1e6 * app_cpu[(stores, label)][-1]:.0f} us/job)  {load()}", flush=True)
    jobs.close()
    print("medians (to the last answer; to the last completion), ratio to the plain loop:")
    for stores in store_counts:
        base = statistics.median(rates[(stores, sides[0])])
        base_cpu = statistics.median(server_cpu[(stores, sides[0])]) + statistics.median(app_cpu[(stores, sides[0])])
        for label in sides:
            median, median_done = statistics.median(rates[(stores, label)]), statistics.median(done[(stores, label)])
            server, client = statistics.median(server_cpu[(stores, label)]), statistics.median(app_cpu[(stores, label)])
            cpu = (f"server {1e6 * server:.0f} us/job, {'client' if label in loops else 'gunicorn'} "
                   f"{1e6 * client:.0f}; CPU ratio {base_cpu / (server + client):.2f}")
            print(f"  {stores:>3} stores  {label:<27} {median:>9,.0f} jobs/s = {median / base:.2f}x;  "
                  f"{median_done:>9,.0f} jobs/s = {median_done / base:.2f}x  ({cpu})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
