"""Drain throughput (issue 2): N no-op jobs through the real endpoint beside a plain psycopg2 loop and pgqueuer.

    make bench                     # scripts/bench.sh: venvs, database, schemas, then this file
    .venv/bin/python bench/drain.py --help

Contenders, all on the same PostgreSQL (DATABASE_URL) in the same run:

- endpoint: a real gunicorn (wsgi:app, gunicorn.conf.py) with JOBPROCESSOR_HANDLERS=jobprocessor.handlers.demo;
  `callers` threads here each POST /process-pending?limit=1000 (the documented Bearer secret) until a call claims
  nothing. Jobs are `demo.noop`.
- reference: one process, no HTTP, no handlers: jobprocessor.queries.claim() (batch 1000) then one finish() of the
  batch, each in its own transaction, as the endpoint does (sql_loop(): the endpoint's own functions, not copies).
- pgqueuer: bench/pgqueuer_drain.py in bench/.venv-pgqueuer (its own tables, from `pgq install`).

Each run starts from an empty table, inserts N jobs in one generate_series INSERT (pgqueuer: its own bulk enqueue),
ANALYZEs, times the drain, and checks that every job was completed exactly once. Timing starts when the first
claim is sent and stops when the last caller has its answer (every outcome is committed by then).

Phases: (1) sweep gunicorn shapes (workers x threads x callers) at the default JOBS_CONCURRENCY, then
JOBS_CONCURRENCY at the best shape, then the shapes again at the best JOBS_CONCURRENCY; (2) sweep pgqueuer batch
size x consumers; (3) `rounds` interleaved rounds of the reference, the endpoint's default and its `finalists`
best sweep configurations, pgqueuer's default and its best ones, so the ratios come from the same minutes of a
shared machine; "best" is the finalist with the highest median there. Medians throughout.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jobprocessor import queries  # noqa: E402  (imported here, so the processes of a drain fork with it loaded)

JOB_TYPE = "demo.noop"
OUT_DIR = ROOT / "bench" / ".out"  # gunicorn logs (git-ignored)
DEFAULT_SHAPE = (2, 4, 4)  # gunicorn.conf.py defaults (WEB_CONCURRENCY=2, GUNICORN_THREADS=4), 4 callers
DEFAULT_CONCURRENCY = 8  # config.py default of JOBS_CONCURRENCY
PGQ_DEFAULT = (10, 1)  # pgqueuer's run() default batch_size, one consumer


def libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


# --- the jobs table ------------------------------------------------------------------------------------------------

# every table a claim reads that a benchmark may leave rows in
QUEUE_STATE_TABLES = ("jobs", "job_store_queues", "job_store_arrivals", "job_pauses", "job_store_limits",
                      "job_store_starts", "job_store_quota_holds")


class JobsTable:
    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def reset(self) -> None:
        """An empty queue with nothing configured: other benchmarks on this database (bench/fair_claim.py) leave
        pauses, limits, starts and directory rows behind, and a paused store's jobs would never drain."""
        with self.conn.cursor() as cur:
            cur.execute(f"TRUNCATE {', '.join(QUEUE_STATE_TABLES)} RESTART IDENTITY")

    def fill(self, n: int) -> None:
        self.reset()
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO jobs (type) SELECT %s FROM generate_series(1, %s)", (JOB_TYPE, n))
            cur.execute("ANALYZE jobs")

    def check_drained(self, n: int) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT status, attempts, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            rows = cur.fetchall()
        if rows != [("completed", 1, n)]:
            return [f"want {n} jobs completed with 1 attempt each, found (status, attempts, count) {rows}"]
        return []

    def clock(self) -> float:
        """The server's clock (epoch seconds): the drain's start on the clock completed_at is written with."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM clock_timestamp())")
            return float(cur.fetchone()[0])

    def last_completed(self) -> float:
        """When the last job was completed (epoch seconds, the server's clock)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM max(completed_at)) FROM jobs")
            return float(cur.fetchone()[0])

    def close(self) -> None:
        self.conn.close()


@dataclass
class Result:
    contender: str
    config: str
    seconds: float
    jobs: int
    calls: int = 0
    done_s: Optional[float] = None  # from the first claim to the last job's completion (the calls may go on after)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def done_per_s(self) -> Optional[float]:
        return None if self.done_s is None else self.jobs / self.done_s


# --- (a) the plain psycopg2 reference loop -------------------------------------------------------------------------

def sql_loop(dsn: str, worker: str, batch: int = 1000, lease_s: float = 300.0, ready=None,
             finished=None) -> tuple[int, int]:
    """The endpoint's statements in a plain loop on one connection, without the processor: queries.claim() -- which
    starts the no-op jobs itself, as the endpoint's rounds do for a type measured quick -- then queries.finish() of
    the batch, every job completed with a JSON null result (a no-op's outcome), each in its own transaction, until a
    claim is empty. The functions are the endpoint's own, so their binding cannot drift from it (a copy of FINISH's
    binding here once fell behind its columns). `ready`: an Event waited for once connected; `finished`: called
    with the jobs done before the connection closes (a server's CPU meter counts only live backends). Returns
    (jobs, claims)."""
    engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn), poolclass=NullPool)
    done = calls = 0
    try:
        with engine.connect() as conn:
            if ready is not None:
                ready.wait()
            while True:
                with conn.begin():
                    claimed = queries.claim(conn, limit=batch, worker=worker, lease_s=lease_s,
                                            start_types=[JOB_TYPE]).jobs
                calls += 1
                if not claimed:
                    if finished is not None:
                        finished(done)
                    return done, calls
                with conn.begin():
                    written = queries.finish(conn, worker, [queries.Outcome(row.id, "completed", "null")
                                                            for row in claimed])
                if len(written) != len(claimed):
                    raise RuntimeError(f"{worker}: FINISH wrote {len(written)} of {len(claimed)} outcomes")
                done += len(claimed)
    finally:
        engine.dispose()


def reference_drain(dsn: str, jobs: JobsTable, n: int, batch: int = 1000, lease_s: float = 300.0) -> Result:
    jobs.fill(n)
    started = time.perf_counter()
    done, calls = sql_loop(dsn, f"bench-reference:{os.getpid()}:{secrets.token_hex(6)}", batch, lease_s)
    seconds = time.perf_counter() - started
    problems = jobs.check_drained(n)
    if done != n or problems:
        raise RuntimeError(f"reference: {done} done; " + "; ".join(problems))
    return Result("reference", f"psycopg2 loop, 1 process, batch {batch}", seconds, n, calls)


# --- the endpoint behind a real gunicorn ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """wsgi:app under gunicorn.conf.py, as Procfile's web: line runs it, with the bench's shape in the env."""

    def __init__(self, database_url: str, workers: int, threads: int, concurrency: int, root: Path = ROOT,
                 env: Optional[dict] = None):
        self.workers, self.threads, self.concurrency, self.root = workers, threads, concurrency, root
        self.port = free_port()
        self.secret = secrets.token_urlsafe(32)
        self.env = dict(os.environ, DATABASE_URL=database_url, CRON_SECRET=self.secret,
                        JOBPROCESSOR_HANDLERS="jobprocessor.handlers.demo", WEB_CONCURRENCY=str(workers),
                        GUNICORN_THREADS=str(threads), JOBS_CONCURRENCY=str(concurrency), PYTHONPATH=str(root),
                        **(env or {}))
        OUT_DIR.mkdir(exist_ok=True)
        self.log_path = OUT_DIR / f"gunicorn-{workers}x{threads}-c{concurrency}-{self.port}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def label(self) -> str:
        return f"{self.workers} workers x {self.threads} threads, JOBS_CONCURRENCY={self.concurrency}"

    def __enter__(self) -> "Server":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py", "--bind",
             f"127.0.0.1:{self.port}"], cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _ = self.request("GET", "/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not start; see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def request(self, method: str, path: str, conn: Optional[http.client.HTTPConnection] = None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.secret}", "Content-Length": "0"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def drain(self, callers: int, limit: int, on_start: Callable[[], None] = lambda: None) -> tuple[float, int, int]:
        """`callers` threads call until a call claims nothing; (seconds, calls, jobs succeeded). `on_start` runs just
        before the callers are let go."""
        start = threading.Barrier(callers + 1)
        calls = [0] * callers
        succeeded = [0] * callers
        errors: list[str] = []

        def caller(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            start.wait()
            try:
                while True:
                    path = "/process-pending" if limit is None else f"/process-pending?limit={limit}"
                    status, body = self.request("POST", path, conn)
                    calls[i] += 1
                    if status != 200:
                        errors.append(f"HTTP {status}: {body[:300]!r}")
                        return
                    summary = json.loads(body)
                    succeeded[i] += summary["succeeded"]
                    if summary.get("busy"):  # this worker already runs its JOBS_MAX_TICKS_PER_PROCESS calls
                        # a new connection, as a cron's next call would be: a kept-alive one stays pinned to the
                        # busy worker while another may be idle
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                        time.sleep(0.005)
                        continue
                    if summary["claimed"] == 0:
                        return
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
            finally:
                conn.close()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        on_start()
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"endpoint ({self.label}): {errors[:3]}; see {self.log_path}")
        return seconds, sum(calls), sum(succeeded)


def endpoint_drain(server: Server, jobs: JobsTable, n: int, callers: int, limit: int, fill: bool = True) -> Result:
    if fill:  # else the caller filled the table
        jobs.fill(n)
    clock: list[float] = []
    seconds, calls, succeeded = server.drain(callers, limit, on_start=lambda: clock.append(jobs.clock()))
    problems = jobs.check_drained(n)
    if succeeded != n:
        problems.append(f"the responses report {succeeded} succeeded, want {n}")
    if problems:
        raise RuntimeError(f"endpoint ({server.label}): " + "; ".join(problems))
    return Result("endpoint", f"{server.label}, {callers} callers, limit={limit}", seconds, n, calls,
                  done_s=jobs.last_completed() - clock[0])


def warm_up(server: Server, jobs: JobsTable, callers: int) -> None:
    """Imports, pools and thread pools in every worker before anything is timed (a small untimed drain)."""
    jobs.fill(2000)
    server.drain(max(callers, server.workers * server.threads), 100)


# --- (b) pgqueuer --------------------------------------------------------------------------------------------------

def pgqueuer_drain(python: str, dsn: str, n: int, batch: int, consumers: int) -> Result:
    out = subprocess.run([python, str(ROOT / "bench" / "pgqueuer_drain.py"), "--dsn", dsn, "--jobs", str(n),
                          "--batch-size", str(batch), "--consumers", str(consumers)],
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"pgqueuer (batch {batch}, {consumers} consumers) failed:\n{out.stdout}\n{out.stderr}")
    run = json.loads(lines[-1])
    return Result("pgqueuer", f"batch_size={batch}, {consumers} consumers (asyncpg, uvloop)", run["seconds"], n)


# --- reporting -----------------------------------------------------------------------------------------------------

def median_rate(results: list[Result]) -> float:
    return statistics.median(r.jobs_per_s for r in results)


def show(label: str, results: list[Result]) -> None:
    rates = ", ".join(f"{r.jobs_per_s:,.0f}" for r in results)
    print(f"  {label:<88} median {median_rate(results):>8,.0f} jobs/s   (runs: {rates})", flush=True)


def repeat(runs: int, fn: Callable[[], Result]) -> list[Result]:
    return [fn() for _ in range(runs)]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class CPUMeter:
    """CPU seconds (user + system, from /proc) of the database server's processes and of a process tree (a
    gunicorn master and its workers): where a drain's time goes, per job, on a local server (Linux only; on
    another system, or a server on another host, the figures read 0)."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        self.postmaster = self._stat(backend)[0] if self._stat(backend) else None

    @classmethod
    def _stat(cls, pid: int) -> Optional[tuple[int, float]]:
        """(parent pid, CPU seconds) of a process, None if it is gone (or there is no /proc)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / cls.TICK

    def read(self, tree_root: Optional[int] = None) -> tuple[float, float]:
        """(CPU s of the server's processes, CPU s of the process tree under `tree_root`), since they started."""
        stats = {}
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if entry.name.isdigit():
                stat = self._stat(int(entry.name))
                if stat is not None:
                    stats[int(entry.name)] = stat
        server = sum(cpu for pid, (ppid, cpu) in stats.items()
                     if self.postmaster is not None and self.postmaster in (pid, ppid))
        tree, frontier = 0.0, {tree_root} if tree_root else set()
        while frontier:
            tree += sum(stats[pid][1] for pid in frontier if pid in stats)
            frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier}
        return server, tree


def parse_shapes(raw: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in item.split("x")) for item in raw.split(",") if item]  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description="Drain throughput: endpoint vs plain psycopg2 loop vs pgqueuer.")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=1000, help="limit of each /process-pending call")
    parser.add_argument("--shapes", default="1x1x1,1x2x2,2x1x2,2x2x2,2x2x4,2x4x4,3x2x3,4x1x4",
                        help="gunicorn workers x threads x callers to sweep")
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="JOBS_CONCURRENCY values to sweep")
    parser.add_argument("--pgq-batches", default="10,50,100,250,500,1000")
    parser.add_argument("--pgq-consumers", default="1,2,4")
    parser.add_argument("--sweep-runs", type=int, default=3, help="runs per configuration in the sweeps")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the final comparison")
    parser.add_argument("--finalists", type=int, default=2,
                        help="best sweep configurations of each side that enter the final comparison")
    parser.add_argument("--pgqueuer-python", default=str(ROOT / "bench" / ".venv-pgqueuer" / "bin" / "python"))
    parser.add_argument("--json", help="write every result to this file")
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print("DATABASE_URL is not set (scripts/bench.sh sets it)", file=sys.stderr)
        return 2
    dsn = libpq_url(database_url)
    jobs = JobsTable(dsn)
    n, limit = args.jobs, args.limit
    all_results: list[dict] = []

    def record(phase: str, results: list[Result]) -> list[Result]:
        all_results.extend(dict(phase=phase, contender=r.contender, config=r.config, seconds=r.seconds,
                                jobs=r.jobs, jobs_per_s=r.jobs_per_s, calls=r.calls) for r in results)
        return results

    print(f"Drain throughput: {n:,} no-op jobs, limit={limit}; {os.cpu_count()} CPUs, {load()}", flush=True)

    # (1) endpoint: shapes at the default concurrency, then concurrency at the best shape
    print(f"\n[1] endpoint sweep ({args.sweep_runs} runs each)", flush=True)
    endpoint_medians: dict[tuple[int, int, int, int], float] = {}

    def sweep_endpoint(workers: int, threads: int, callers: int, concurrency: int) -> None:
        key = (workers, threads, callers, concurrency)
        if key in endpoint_medians:
            return
        with Server(database_url, workers, threads, concurrency) as server:
            warm_up(server, jobs, callers)
            results = record("sweep", repeat(args.sweep_runs, lambda: endpoint_drain(server, jobs, n, callers,
                                                                                    limit)))
        endpoint_medians[key] = median_rate(results)
        show(f"{workers}x{threads} gunicorn, {callers} callers, JOBS_CONCURRENCY={concurrency}", results)

    shapes = parse_shapes(args.shapes)
    for workers, threads, callers in shapes:
        sweep_endpoint(workers, threads, callers, DEFAULT_CONCURRENCY)
    best_shape = max(endpoint_medians, key=endpoint_medians.get)[:3]
    for concurrency in (int(x) for x in args.concurrency.split(",")):
        sweep_endpoint(*best_shape, concurrency)
    best_concurrency = max(endpoint_medians, key=endpoint_medians.get)[3]
    for workers, threads, callers in shapes:  # the shapes again at the best concurrency (they interact)
        sweep_endpoint(workers, threads, callers, best_concurrency)

    # (2) pgqueuer: batch size x consumers
    print(f"\n[2] pgqueuer sweep ({args.sweep_runs} runs each)", flush=True)
    pgq_medians: dict[tuple[int, int], float] = {}
    for consumers in (int(x) for x in args.pgq_consumers.split(",")):
        for batch in (int(x) for x in args.pgq_batches.split(",")):
            results = record("sweep", repeat(args.sweep_runs, lambda: pgqueuer_drain(args.pgqueuer_python, dsn, n,
                                                                                    batch, consumers)))
            pgq_medians[(batch, consumers)] = median_rate(results)
            show(f"pgqueuer batch_size={batch}, {consumers} consumers", results)

    # (3) the comparison, interleaved: the defaults and the sweeps' top candidates of each side, round after round
    default_key = (*DEFAULT_SHAPE, DEFAULT_CONCURRENCY)
    endpoint_keys = [default_key] + [k for k in sorted(endpoint_medians, key=endpoint_medians.get, reverse=True)
                                     if k != default_key][:args.finalists]
    pgq_keys = [PGQ_DEFAULT] + [k for k in sorted(pgq_medians, key=pgq_medians.get, reverse=True)
                                if k != PGQ_DEFAULT][:args.finalists]
    print(f"\n[3] comparison: {args.rounds} interleaved rounds of the reference, the endpoint's default and top "
          f"{args.finalists} and pgqueuer's default and top {args.finalists}; {load()}", flush=True)
    final: dict[str, list[Result]] = {}
    with contextlib.ExitStack() as stack:
        contenders: dict[str, Callable[[], Result]] = {
            "reference": lambda: reference_drain(dsn, jobs, n, batch=limit)}
        for workers, threads, callers, concurrency in endpoint_keys:
            server = stack.enter_context(Server(database_url, workers, threads, concurrency))
            warm_up(server, jobs, callers)
            contenders[f"endpoint {workers}x{threads}x{callers} c{concurrency}"] = \
                lambda server=server, callers=callers: endpoint_drain(server, jobs, n, callers, limit)
        for batch, consumers in pgq_keys:
            contenders[f"pgqueuer b{batch} x{consumers}"] = \
                lambda batch=batch, consumers=consumers: pgqueuer_drain(args.pgqueuer_python, dsn, n, batch,
                                                                        consumers)
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                final.setdefault(name, []).append(fn())
    for name, results in final.items():
        record("final", results)
        show(results[0].config if name == "reference" else f"{results[0].contender}: {results[0].config}", results)
    medians = {name: median_rate(results) for name, results in final.items()}
    endpoint_names = [name for name in final if name.startswith("endpoint")]
    pgq_names = [name for name in final if name.startswith("pgqueuer")]
    picks = {"endpoint (default)": endpoint_names[0], "endpoint (best)": max(endpoint_names, key=medians.get),
             "pgqueuer (default)": pgq_names[0], "pgqueuer (best)": max(pgq_names, key=medians.get)}
    ref, pgq = medians["reference"], medians[picks["pgqueuer (best)"]]
    print("\nRatios (medians of the interleaved rounds; best = highest median among the finalists):")
    for label in ("endpoint (default)", "endpoint (best)", "pgqueuer (default)", "pgqueuer (best)"):
        rate = medians[picks[label]]
        print(f"  {label:<19} {rate:>8,.0f} jobs/s  {rate / ref:6.1%} of the reference loop  "
              f"{rate / pgq:5.2f}x pgqueuer (best)   [{final[picks[label]][0].config}]")
    print(f"  {'reference':<19} {ref:>8,.0f} jobs/s")
    print(f"  aim: endpoint >= 50% of the reference and >= 1.5x pgqueuer (best) at limit={limit}")
    print(f"\n{load()}")
    jobs.close()
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
