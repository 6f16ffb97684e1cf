"""Scale evidence for issue 5: the queue at 0, 1M and 10M rows of history (docs/BENCHMARKS.md, "Operations at scale").

    .venv/bin/python bench/ops_scale.py [--rows 10000000] [--flow 1000000] [--cleanup 1000000]

Builds a fresh database `jobprocessor_bench` on the embedded server (or BENCH_DATABASE_URL) with the real migrations,
fills it with generate_series, and prints:
  1. claim latency with 0, 1M and 10M finished rows (10k due pending jobs each time)
  2. the health and alerts views at 10M rows (time and EXPLAIN ANALYZE plans), GET /process-pending with nothing due
  3. claim latency right after `--flow` jobs went pending -> running -> completed by UPDATE (the real claim and
     finish statements), with the shipped autovacuum settings and with the table's defaults, vs fresh
  4. cleanup of `--cleanup` old rows through the maintenance path: total time, and claim latency while it runs
A claim is measured as the real statement (queries.claim, limit 10) in a transaction that is rolled back, so the
table stays the same between samples (client wall time, the server process's CPU time per claim, buffers); part 1 also
measures committed claims of fresh jobs, each followed by its finish. Takes about half an hour at 10M rows on 2 cores.

    --history-only       part 1 only, keeps jobprocessor_bench
    --interleaved N      part 1 again, on 0- and 1M-row databases built beside jobprocessor_bench, all three measured
                         in turns for N rounds (ratios a shared machine does not skew)
    --flow-only          part 3 again on the database a full run left (--flow-rate, --scenarios), with the
                         auto_explain plans of one claim right after the flow
"""
from __future__ import annotations

import argparse
import json
import re
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from jobprocessor import create_app, queries  # noqa: E402
from jobprocessor.config import Settings, normalise_database_url  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from fair_claim import ServerCpu  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
PROBE_PENDING = 10_000
# the shipped storage settings of jobs, in the order the revisions apply them
STORAGE_FILES = ("054_jobs_storage_v1.sql", "054_jobs_storage_v2.sql")
STORAGE_PARAMS = ("fillfactor", "autovacuum_vacuum_threshold", "autovacuum_vacuum_scale_factor",
                  "autovacuum_vacuum_insert_threshold", "autovacuum_vacuum_insert_scale_factor",
                  "autovacuum_analyze_threshold", "autovacuum_analyze_scale_factor", "vacuum_index_cleanup",
                  "autovacuum_vacuum_cost_delay")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def database_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        return url
    from jobprocessor import devdb

    devdb.start()
    admin = create_engine(normalise_database_url(devdb.url("postgres")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS jobprocessor_bench WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE jobprocessor_bench"))
    admin.dispose()
    return devdb.url("jobprocessor_bench")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(samples_ms: list[float]) -> dict:
    return {"n": len(samples_ms), "p50_ms": round(percentile(samples_ms, 50), 3),
            "p99_ms": round(percentile(samples_ms, 99), 3), "mean_ms": round(statistics.fmean(samples_ms), 3)}


def claim_once(engine) -> float:
    with engine.connect() as conn:
        return claim_on(conn)


def claim_on(conn) -> float:
    started = time.perf_counter()
    trans = conn.begin()
    result = queries.claim(conn, limit=10, worker="bench", lease_s=300)
    elapsed = (time.perf_counter() - started) * 1000
    trans.rollback()
    assert len(result.jobs) == 10, "the bench needs due pending jobs"
    return elapsed


def claim_work(engine, n: int = 7) -> dict:
    """Server-side figures of the claim, robust to a busy machine: shared buffers the statement touched (its work,
    whatever the CPU is doing meanwhile) and the server's execution time; medians of n rolled-back runs."""
    buffers, exec_ms = [], []
    sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.CLAIM
    params = CLAIM_PARAMS
    with engine.connect() as conn:
        for _ in range(n):
            trans = conn.begin()
            plan = conn.execute(text(sql), params).scalar_one()[0]
            trans.rollback()
            buffers.append(plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"])
            exec_ms.append(plan["Execution Time"])
    return {"buffers": statistics.median(buffers), "server_ms": round(statistics.median(exec_ms), 3)}


CLAIM_PARAMS = {"limit": 10, "worker": "bench", "lease_s": 300, "job_types": None, "rescue_limit": 1000,
                "max_per_store": None, "start_types": "{}"}


def claim_plans(engine) -> str:
    """The plans of the statements one claim runs, the ones inside jobs_fair_claim() too (auto_explain of nested
    statements, with buffers): which index each read walks, and how many pages it took. Rolled back."""
    with engine.connect() as conn:
        trans = conn.begin()
        conn.execute(text("LOAD 'auto_explain'"))
        for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                        "auto_explain.log_analyze = on", "auto_explain.log_buffers = on",
                        "auto_explain.log_timing = on", "auto_explain.log_level = notice",
                        "client_min_messages = log"):
            conn.execute(text(f"SET LOCAL {setting}"))
        # through the DBAPI cursor: notices raised under SQLAlchemy's execute do not reach dbapi.notices here
        dbapi = conn.connection.dbapi_connection
        del dbapi.notices[:]
        cursor = dbapi.cursor()
        cursor.execute(re.sub(r"(?<!:):(\w+)", r"%(\1)s", queries.CLAIM), CLAIM_PARAMS)
        notices = "".join(dbapi.notices)
        trans.rollback()
    return notices


def measure_claims(engine, n: int = 300) -> dict:
    """Client wall time of n rolled-back claims on one connection, and `cpu_ms`: the CPU time its server process
    spent per claim (bench/fair_claim.py's ServerCpu), which waiting for a core on a shared machine does not
    inflate."""
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(20):
            claim_on(conn)
        cpu_before = cpu.ms()
        samples = [claim_on(conn) for _ in range(n)]
        cpu_after = cpu.ms()
    cpu_ms = None if cpu_before is None or cpu_after is None else round((cpu_after - cpu_before) / n, 3)
    return {**summary(samples), "cpu_ms": cpu_ms, **claim_work(engine)}


def measure_committed(engine, n: int = 3000) -> dict:
    """The claim as it runs in production, where it commits and the job is then finished: n fresh jobs (due before
    the probe jobs) pending -> running -> completed, 10 per claim, each claim and each finish its own transaction.
    Client wall time of the claims and of the finishes; server CPU per claim + finish. This is the path whose writes
    land in the indexes (a rolled-back claim writes the same entries each time)."""
    insert_pending(engine, n, "timestamptz '2000-01-01' + g * interval '1 millisecond'")
    claims, finishes = [], []
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        cpu_before = cpu.ms()
        moved = 0
        while moved < n:
            started = time.perf_counter()
            with conn.begin():
                claimed = queries.claim(conn, limit=10, worker="bench", lease_s=300)
            middle = time.perf_counter()
            with conn.begin():
                queries.finish(conn, "bench", [queries.Outcome(row["id"], "completed", result_json='{"ok":true}')
                                               for row in claimed.jobs])
            finishes.append((time.perf_counter() - middle) * 1000)
            claims.append((middle - started) * 1000)
            moved += len(claimed.jobs)
        cpu_after = cpu.ms()
    cpu_ms = None if cpu_before is None or cpu_after is None else round((cpu_after - cpu_before) / len(claims), 3)
    return {"claim": summary(claims), "finish": summary(finishes), "cpu_ms_per_claim_and_finish": cpu_ms}


def settle(engine, timeout_s: float = 600) -> None:
    """Wait until no autovacuum works on this database: a claim measured while autovacuum reads the table through
    (it does after every bulk load) measures the vacuum as much as the claim."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            busy = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                                     "AND datname = current_database()")).scalar_one()
        if not busy:
            return
        time.sleep(2)
    log("  autovacuum still running after the timeout; measuring anyway")


def write_results(results: dict, name: str) -> None:
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    log(f"results written to {out.relative_to(ROOT)}")


def execute(engine, sql: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def vacuum_analyze(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) jobs"))


def insert_finished(engine, n: int, days: float, chunk: int = 1_000_000) -> None:
    """n finished jobs spread evenly over the last `days` days: 94% completed, 5% failed, 1% cancelled, 200 stores,
    1000 users, 8 types."""
    done = 0
    while done < n:
        size = min(chunk, n - done)
        execute(engine, """
            INSERT INTO jobs (type, payload, status, priority, store_id, user_id, run_at, created_at, started_at,
                              completed_at, attempts, result, last_error)
            SELECT 'type.' || (g % 8), '{"sku": "A-1"}'::jsonb,
                   CASE WHEN g % 100 < 94 THEN 'completed' WHEN g % 100 < 99 THEN 'failed' ELSE 'cancelled' END,
                   5, 'store-' || (g % 200), 'user-' || (g % 1000), t - interval '2 seconds', t - interval '2 seconds',
                   t - interval '1 second', t, 1,
                   CASE WHEN g % 100 < 94 THEN '{"ok": true}'::jsonb END,
                   CASE WHEN g % 100 BETWEEN 94 AND 98 THEN 'RuntimeError: upstream said no' END
            FROM generate_series(:start, :stop) AS g,
                 LATERAL (SELECT now() - make_interval(secs => :span_s * (1 - g::float8 / :total))) AS x(t)
        """, start=done + 1, stop=done + size, span_s=days * 86400, total=n)
        done += size
        log(f"  inserted {done:,}/{n:,} finished rows")


def insert_pending(engine, n: int, run_at_sql: str = "now()") -> None:
    execute(engine, f"""
        INSERT INTO jobs (type, payload, store_id, user_id, run_at)
        SELECT 'type.' || (g % 8), '{{}}'::jsonb, 'store-' || (g % 200), 'user-' || (g % 1000), {run_at_sql}
        FROM generate_series(1, :n) AS g
    """, n=n)


def timed_query(engine, sql: str, n: int = 30) -> dict:
    samples = []
    with engine.connect() as conn:
        for i in range(n + 3):
            started = time.perf_counter()
            conn.execute(text(sql)).all()
            if i >= 3:
                samples.append((time.perf_counter() - started) * 1000)
        plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)))
    return {**summary(samples), "plan": plan}


def flow(engine, n: int, batch: int = 1000, rate: float = 0.0) -> float:
    """n jobs through the real claim and finish statements: pending -> running -> completed, `batch` at a time;
    at most `rate` jobs per second (0: as fast as one connection can)."""
    # due long before the probe jobs (run_at = the time they were inserted): first in the claim's order
    insert_pending(engine, n, "timestamptz '2000-01-01' + g * interval '1 millisecond'")
    started = time.monotonic()
    moved = 0
    while moved < n:
        if rate:
            ahead = started + moved / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        with engine.begin() as conn:
            claimed = queries.claim(conn, limit=min(batch, n - moved), worker="flow", lease_s=300)
        outcomes = [queries.Outcome(row["id"], "completed", result_json='{"ok":true}') for row in claimed.jobs]
        with engine.begin() as conn:
            queries.finish(conn, "flow", outcomes)
        moved += len(outcomes)
        if moved % 200_000 < batch:
            log(f"  flowed {moved:,}/{n:,}")
    return time.monotonic() - started


def dead_tuples(engine) -> dict:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT n_live_tup, n_dead_tup, autovacuum_count, last_autovacuum "
                                "FROM pg_stat_user_tables WHERE relname = 'jobs'")).mappings().one()
    return {k: (str(v) if k == "last_autovacuum" else v) for k, v in row.items()}


def flow_scenario(engine, label: str, n: int, watch_s: float, rate: float = 0.0) -> dict:
    fresh = measure_claims(engine)
    log(f"  {label}: fresh claim {fresh}")
    seconds = flow(engine, n, rate=rate)
    plans = claim_plans(engine)  # first: what the claim walks at the very end of the flow
    right_after = measure_claims(engine)
    log(f"  {label}: flowed {n:,} in {seconds:.0f} s; right after: {right_after} {dead_tuples(engine)}")
    series = []
    started = time.monotonic()
    while time.monotonic() - started < watch_s:
        time.sleep(10)
        point = measure_claims(engine, 100)
        series.append({"t_s": round(time.monotonic() - started), **point, **dead_tuples(engine)})
        log(f"  {label}: +{series[-1]['t_s']} s {point} dead={series[-1]['n_dead_tup']}")
    return {"fresh": fresh, "flow_seconds": round(seconds, 1), "flow_rate_per_s": round(n / seconds),
            "right_after": right_after,
            "ratio_right_after": round(right_after["p50_ms"] / fresh["p50_ms"], 2),
            "buffer_ratio_right_after": round(right_after["buffers"] / fresh["buffers"], 2), "after": series,
            "stats_right_after": dead_tuples(engine), "claim_plans_right_after": plans}


def restore_shipped_settings(engine) -> None:
    from jobprocessor.sqlfiles import execute_sql_file

    with engine.begin() as conn:
        for name in STORAGE_FILES:
            execute_sql_file(conn, name)


def flow_only(args, results: dict) -> None:
    """The flow scenarios again, on the database a full run left (paced with --flow-rate)."""
    from jobprocessor import devdb

    url = os.environ.get("BENCH_DATABASE_URL") or devdb.url("jobprocessor_bench")
    engine = create_engine(normalise_database_url(url), pool_size=4)
    with engine.connect() as conn:
        results["rows"] = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    restore_shipped_settings(engine)
    vacuum_analyze(engine)
    log(f"flow scenarios on {results['rows']:,} rows, {args.flow:,} jobs at {args.flow_rate or 'unpaced'} jobs/s")
    if "shipped" in args.scenarios:
        results["flow_shipped"] = flow_scenario(engine, "shipped settings", args.flow, args.watch, args.flow_rate)
        vacuum_analyze(engine)
    if "defaults" in args.scenarios:
        execute(engine, f"ALTER TABLE jobs RESET ({', '.join(STORAGE_PARAMS)})")
        results["flow_defaults"] = flow_scenario(engine, "table defaults", args.flow, args.watch, args.flow_rate)
        restore_shipped_settings(engine)
        vacuum_analyze(engine)
    tag = f"_{args.tag}" if args.tag else ""
    out = ROOT / "bench" / "results" / f"ops_flow_{int(args.flow_rate)}_{'_'.join(args.scenarios)}{tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    log(f"results written to {out.relative_to(ROOT)}")


def fresh_database(name: str) -> str:
    """An empty database `name` on the embedded server, migrated to head; its URL."""
    from jobprocessor import devdb

    devdb.start()
    admin = create_engine(normalise_database_url(devdb.url("postgres")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = normalise_database_url(devdb.url(name))
    app = create_app(Settings.from_env({}, DATABASE_URL=url, CRON_SECRET=SECRET))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    return url


def interleaved(args, results: dict) -> None:
    """Claim latency vs history, measured in turns on three databases side by side (0 and 1M finished rows, built
    here; the --rows one a --history-only or full run left in jobprocessor_bench), `--interleaved` rounds, so that
    what the shared machine does at one moment hits every size alike. Per size: medians over the rounds."""
    from jobprocessor import devdb

    big_url = os.environ.get("BENCH_DATABASE_URL") or devdb.url("jobprocessor_bench")
    engines = {}
    for label, rows in (("0", 0), ("1M", 1_000_000)):
        engine = create_engine(fresh_database(f"jobprocessor_bench_{label.lower()}"), pool_size=2)
        insert_pending(engine, PROBE_PENDING)
        if rows:
            insert_finished(engine, rows, args.days)
        vacuum_analyze(engine)
        engines[label] = engine
    engines["big"] = create_engine(normalise_database_url(big_url), pool_size=2)
    with engines["big"].connect() as conn:
        results["big_rows"] = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    rounds: dict = {label: [] for label in engines}
    for i in range(args.interleaved):
        for label, engine in engines.items():
            settle(engine)
            point = {"claim": measure_claims(engine), "committed": measure_committed(engine)}
            vacuum_analyze(engine)
            rounds[label].append(point)
            log(f"  round {i + 1}, {label}: {point}")
    results["rounds"] = rounds
    med = statistics.median
    results["medians"] = {label: {
        "claim_p50_ms": med(p["claim"]["p50_ms"] for p in points),
        "claim_cpu_ms": med(p["claim"]["cpu_ms"] or 0 for p in points),
        "claim_buffers": med(p["claim"]["buffers"] for p in points),
        "committed_claim_p50_ms": med(p["committed"]["claim"]["p50_ms"] for p in points),
        "committed_finish_p50_ms": med(p["committed"]["finish"]["p50_ms"] for p in points),
        "committed_cpu_ms": med(p["committed"]["cpu_ms_per_claim_and_finish"] or 0 for p in points),
    } for label, points in rounds.items()}
    for label, row in results["medians"].items():
        log(f"  {label}: {row}")
    write_results(results, "ops_history_interleaved.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--flow", type=int, default=1_000_000)
    parser.add_argument("--cleanup", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=365.0, help="history spread over this many days")
    parser.add_argument("--watch", type=float, default=90.0, help="seconds of claim sampling after each flow")
    parser.add_argument("--flow-rate", type=float, default=0.0, help="jobs per second in the flow (0: unpaced)")
    parser.add_argument("--scenarios", type=lambda v: v.split(","), default=["shipped", "defaults"],
                        help="with --flow-only: shipped,defaults (the autovacuum settings to flow under)")
    parser.add_argument("--history-only", action="store_true",
                        help="build the database and run only part 1 (claim latency vs history); keeps the database")
    parser.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                        help="only measure claim latency vs history: builds 0- and 1M-row databases next to the "
                             "existing jobprocessor_bench and measures the three in turns, ROUNDS rounds")
    parser.add_argument("--tag", default="", help="with --flow-only: appended to the results file's name, so that "
                                                   "runs under different server settings do not overwrite each other")
    parser.add_argument("--flow-only", action="store_true",
                        help="reuse the existing jobprocessor_bench database and run only the flow scenarios")
    args = parser.parse_args()
    results: dict = {"args": vars(args)}
    if args.flow_only:
        flow_only(args, results)
        return
    if args.interleaved:
        interleaved(args, results)
        return

    url = database_url()
    settings = Settings.from_env({}, DATABASE_URL=normalise_database_url(url), CRON_SECRET=SECRET)
    app = create_app(settings)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    engine = create_engine(normalise_database_url(url), pool_size=4)
    with engine.connect() as conn:
        results["server"] = conn.execute(text("SELECT version()")).scalar_one()
        results["naptime"] = conn.execute(text("SHOW autovacuum_naptime")).scalar_one()

    log("1. claim latency vs history size")
    insert_pending(engine, PROBE_PENDING)
    vacuum_analyze(engine)

    def at_size(key: str, label: str) -> None:
        settle(engine)
        results[key] = measure_claims(engine)
        results[key.replace("claim_", "committed_")] = measure_committed(engine)
        vacuum_analyze(engine)  # the committed jobs' dead entries out of the claim's way again
        log(f"  {label} finished rows: {results[key]}; committed claim + finish: "
            f"{results[key.replace('claim_', 'committed_')]}")

    at_size("claim_0", "0")
    first = min(1_000_000, args.rows)
    insert_finished(engine, first, args.days)
    vacuum_analyze(engine)
    at_size("claim_1m", f"{first:,}")
    if args.rows > first:
        insert_finished(engine, args.rows - first, args.days)
        vacuum_analyze(engine)
    at_size("claim_10m", f"{args.rows:,}")
    with engine.connect() as conn:
        results["table_size"] = conn.execute(text(
            "SELECT pg_size_pretty(pg_table_size('jobs')) AS heap, pg_size_pretty(pg_indexes_size('jobs')) AS "
            "indexes, (SELECT count(*) FROM jobs) AS rows, (SELECT count(*) FROM jobs WHERE completed_at > now() - "
            "interval '24 hours') AS finished_last_24h")).mappings().one()
        results["table_size"] = dict(results["table_size"])
    log(f"  table: {results['table_size']}")
    if args.history_only:
        write_results(results, "ops_history.json")
        return

    log("2. views and the empty call at full size")
    results["health_view"] = timed_query(engine, "SELECT * FROM job_queue_health")
    results["alerts_view"] = timed_query(engine, "SELECT * FROM job_queue_alerts")
    for name in ("health_view", "alerts_view"):
        log(f"  {name}: { {k: v for k, v in results[name].items() if k != 'plan'} }")
    execute(engine, "UPDATE jobs SET run_at = run_at + interval '1 day' WHERE status = 'pending'")
    vacuum_analyze(engine)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {SECRET}"}
    samples = []
    for i in range(220):
        started = time.perf_counter()
        response = client.post("/process-pending", headers=headers)
        if i >= 20:
            samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200 and response.json["claimed"] == 0, response.json
    results["process_pending_nothing_due"] = summary(samples)
    log(f"  POST /process-pending, nothing due (full HTTP stack in-process): {results['process_pending_nothing_due']}")
    execute(engine, "UPDATE jobs SET run_at = run_at - interval '1 day' WHERE status = 'pending'")
    vacuum_analyze(engine)

    log("3. claim latency right after a flow of jobs, shipped autovacuum settings vs table defaults")
    results["flow_shipped"] = flow_scenario(engine, "shipped settings", args.flow, args.watch)
    vacuum_analyze(engine)
    execute(engine, f"ALTER TABLE jobs RESET ({', '.join(STORAGE_PARAMS)})")
    results["flow_defaults"] = flow_scenario(engine, "table defaults", args.flow, args.watch)
    execute(engine, "ALTER TABLE jobs SET (fillfactor = 90)")  # back to the shipped settings for the cleanup
    with app.app_context():
        from jobprocessor.sqlfiles import execute_sql_file

        with engine.begin() as conn:
            for name in STORAGE_FILES:
                execute_sql_file(conn, name)
    vacuum_analyze(engine)

    log("4. cleanup of old rows while claims go on")
    with engine.connect() as conn:
        cutoff_age = conn.execute(text(
            "SELECT now() - completed_at FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') "
            "ORDER BY completed_at LIMIT 1 OFFSET :n"), {"n": args.cleanup}).scalar_one()
    results["cleanup_before"] = measure_claims(engine)
    during: list[float] = []
    stop = threading.Event()

    def claims_meanwhile():
        while not stop.is_set():
            during.append(claim_once(engine))
            time.sleep(0.01)

    watcher = threading.Thread(target=claims_meanwhile)
    watcher.start()
    from jobprocessor.maintenance.cleaner import Cleaner, CleanerConfig

    try:
        config = CleanerConfig.from_settings(settings, completed_older_than=cutoff_age, failed_older_than=cutoff_age)
        report = Cleaner(engine, config).run_once(budget_s=3600)
    finally:
        stop.set()
        watcher.join()
    results["cleanup"] = {**report.as_dict(), "rows_per_s": round((report.archived + report.deleted)
                                                                  / max(report.duration_ms / 1000, 1e-9)),
                          "claims_during": summary(during)}
    log(f"  cleanup: {results['cleanup']}; claims before: {results['cleanup_before']}")

    out = ROOT / "bench" / "results" / "ops_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    log(f"results written to {out.relative_to(ROOT)}")
    for name in ("health_view", "alerts_view"):
        print(f"\n--- EXPLAIN ANALYZE {name} ---\n{results[name]['plan']}")


if __name__ == "__main__":
    main()
