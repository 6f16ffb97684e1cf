"""The dashboard at scale (issue 13; docs/BENCHMARKS.md, "Dashboard"):

    .venv/bin/python bench/dashboard.py [--jobs 1000000] [--stores 1000] [--reps 15] [--claim-phase-s 30]

Builds a fresh database `jobprocessor_bench_dashboard` on the embedded server (or BENCH_DATABASE_URL) with the real
migrations and fills it with `--jobs` jobs over `--stores` stores, in id order as a real table holds them: the
history (created over 30 days: 91 % completed, 8 % failed with five kinds of error, 1 % cancelled), then the live
queue, `--live-share` of the jobs (created over the last two hours: 80 % due, 20 % due later, 0.1 % running); 30 %
of the jobs in batches of 30; 10 types; two callers' ticks over the last day. Then VACUUM ANALYZE. Prints:
  1. each page's server time as an operator sees it (Flask's WSGI app in this process, real PostgreSQL: the whole
     request, rendering included), median and p95 of --reps requests, and writes the EXPLAIN (ANALYZE, BUFFERS)
     plan of every query each page ran to bench/results/dashboard_plans[_TAG].txt;
  2. the claim's latency (queries.claim, limit 100, rolled back, from a process of its own) without and with the
     overview refreshed every second through a real gunicorn, in --claim-phases alternating phases of --claim-phase-s
     (off, on, off, on, ...): p50 and p99 per condition, and the overview's own response times meanwhile.
    --keep         reuse the database a previous run filled (skip the fill)
    --pages-only   part 1 only
    --bulk         part 3 only, on a kept database: the claim's latency from a process of its own for
                   --claim-phase-s, then while a bulk retry of every failed job runs (batches of 1,000), and how often
                   the claimer was seen waiting for a lock meanwhile
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from jobprocessor import create_app, queries  # noqa: E402
from jobprocessor.config import Settings, normalise_database_url  # noqa: E402

DBNAME = "jobprocessor_bench_dashboard"
SECRET = "bench-secret-0123456789abcdef"
OPERATOR = "bench-operator-secret-0123456789"
SESSION_KEY = "bench-session-key-0123456789abcdefghijkl"
RESULTS = ROOT / "bench" / "results"
PLANS_FILE = RESULTS / "dashboard_plans.txt"

# Jobs in id order, as a real table holds them: the history first (created over the last 30 days, finished a few
# seconds to a minute later: 91 % completed, 8 % failed, 1 % cancelled), then the live queue (created over the last
# two hours: 80 % due, 20 % due within two hours, 0.1 % running).
FILL = """
INSERT INTO jobs (type, status, priority, store_id, run_at, created_at, started_at, completed_at, attempts,
                  last_error, batch_id, locked_by, locked_until, payload, result)
SELECT 'type.' || (g % 10), s.status,
       CASE g % 50 WHEN 0 THEN 1 WHEN 1 THEN 10 ELSE 5 END,
       'store-' || lpad(((g * 7919) % :stores)::text, 4, '0'),
       CASE WHEN s.status = 'pending' AND g % 10 >= 8 THEN now() + make_interval(secs => g % 7200) ELSE c.created END,
       c.created,
       CASE WHEN s.status IN ('running', 'completed', 'failed') THEN c.created + make_interval(secs => 1) END,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
            THEN c.created + make_interval(secs => 2 + g % 60) END,
       CASE WHEN s.status = 'failed' THEN 3 WHEN s.status IN ('completed', 'running') THEN 1 ELSE 0 END,
       CASE WHEN s.status = 'failed' THEN
            (ARRAY['HTTPError: 429 Too Many Requests for product ' || g,
                   'TimeoutError: shop API took longer than 30 s (store-' || (g % 97) || ')',
                   'PermanentError: product ' || g || ' has no title',
                   'KeyError: ''sku''',
                   'attempts exhausted (3/3); last error: ConnectionError: [Errno 111] Connection refused'])[1 + g % 5]
       END,
       CASE WHEN g % 10 < 3 THEN 'batch-' || lpad(((g / 100) % 100000)::text, 5, '0') END,
       CASE WHEN s.status = 'running' THEN 'bench:1:abc' END,
       CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END,
       jsonb_build_object('sku', 'SKU-' || g, 'language', 'de'),
       CASE WHEN s.status = 'completed' THEN '{"ok": true}'::jsonb END
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g,
LATERAL (SELECT g > CAST(:history AS bigint) AS live) AS l,
LATERAL (SELECT CASE WHEN l.live
                THEN now() - make_interval(secs => 7200.0 * (CAST(:total AS bigint) - g)
                                                   / greatest(1, CAST(:total AS bigint) - CAST(:history AS bigint)))
                ELSE now() - interval '2 hours' - make_interval(secs => 2592000.0 * (CAST(:history AS bigint) - g)
                                                                       / greatest(1, CAST(:history AS bigint)))
                END AS created) AS c,
LATERAL (SELECT CASE WHEN l.live THEN CASE WHEN g % 1000 = 0 THEN 'running' ELSE 'pending' END
                     WHEN g % 100 < 91 THEN 'completed' WHEN g % 100 < 99 THEN 'failed' ELSE 'cancelled' END
         AS status) AS s
"""
TICKS = """
INSERT INTO job_ticks (worker, started_at, ended_at, job_limit, budget_s, rounds, claimed, succeeded, retried,
                       failed)
SELECT 'web-' || (g % 2) || ':' || g, now() - make_interval(secs => g * 30), now() - make_interval(secs => g * 30 - 60),
       10000, 90, 12, 420 + g % 40, 380 + g % 40, 10, g % 30
FROM generate_series(1, 2880) AS g
"""
RUNTIMES = """
INSERT INTO job_type_runtimes (type, recent_s, runs)
SELECT 'type.' || t, ARRAY(SELECT (0.05 + random() * t)::real FROM generate_series(1, 64)), 100000
FROM generate_series(0, 9) AS t
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def database_url(keep: bool) -> str:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        return url
    from jobprocessor import devdb

    devdb.start()
    if not keep:
        admin = create_engine(normalise_database_url(devdb.url("postgres")), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {DBNAME}"))
        admin.dispose()
    return devdb.url(DBNAME)


def settings(url: str) -> Settings:
    return Settings.from_env({}, DATABASE_URL=normalise_database_url(url), CRON_SECRET=SECRET,
                             DASHBOARD_SECRET=OPERATOR, DASHBOARD_SESSION_KEY=SESSION_KEY)


def fill(url: str, jobs: int, stores: int, live_share: float) -> None:
    from flask_migrate import upgrade

    app = create_app(settings(url))
    with app.app_context():
        upgrade()
    engine = create_engine(normalise_database_url(url))
    chunk = 100_000
    started = time.monotonic()
    for first in range(1, jobs + 1, chunk):
        with engine.begin() as conn:
            conn.execute(text(FILL), {"first": first, "last": min(jobs, first + chunk - 1), "stores": stores,
                                      "total": jobs, "history": int(jobs * (1 - live_share))})
        log(f"  {min(jobs, first + chunk - 1):,} jobs")
    with engine.begin() as conn:
        conn.execute(text(TICKS))
        conn.execute(text(RUNTIMES))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    log(f"filled {jobs:,} jobs over {stores:,} stores in {time.monotonic() - started:.0f} s")
    engine.dispose()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def sign_in(client) -> None:
    form = client.get("/dashboard/signin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/dashboard/signin", data={"secret": OPERATOR, "csrf_token": token}).status_code == 302


def pages(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        failed_id = conn.execute(text("SELECT max(id) FROM jobs WHERE status = 'failed'")).scalar_one()
        store = conn.execute(text("SELECT store_id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1")).scalar()
        created_after = conn.execute(text("SELECT (now() - interval '2 days')::text")).scalar_one()
    return [
        ("overview, alerts read (first render)", "/dashboard/?refresh=0"),
        ("overview, alerts cached (next 10 s)", "/dashboard/?refresh=0"),
        ("stores", "/dashboard/stores"),
        ("stores, page 10", "/dashboard/stores?page=10"),
        ("a store", f"/dashboard/stores/{store}"),
        ("jobs", "/dashboard/jobs"),
        ("jobs: failed of a type", "/dashboard/jobs?status=failed&type=type.3"),
        ("jobs: a store's", f"/dashboard/jobs?store_id={store}"),
        ("jobs: a batch's", "/dashboard/jobs?batch_id=batch-00042"),
        ("jobs: error text, failed", "/dashboard/jobs?status=failed&error_contains=timeout"),
        ("jobs: created in 2 days",
         "/dashboard/jobs?created_after=" + created_after.replace(" ", "T").replace("+", "%2B")),
        ("a job", f"/dashboard/jobs/{failed_id}"),
        ("failed groups, 24 h", "/dashboard/failed?window=24h"),
        ("failed groups, 7 d", "/dashboard/failed?window=7d"),
        ("batches", "/dashboard/batches"),
        ("schedules", "/dashboard/schedules"),
        ("pauses & limits", "/dashboard/controls"),
        ("action log", "/dashboard/actions"),
        ("dry run: retry failed of a type", "/dashboard/bulk/confirm?action=retry&status=failed&type=type.3"),
    ]


def measure_pages(url: str, reps: int) -> list[dict]:
    app = create_app(settings(url))
    client = app.test_client()
    from jobprocessor.extensions import db

    with app.app_context():
        engine = db.engine
        sign_in(client)
        captured: list[tuple[str, object]] = []
        capturing = threading.Event()

        @event.listens_for(engine, "before_cursor_execute")
        def capture(conn, cursor, statement, parameters, context, executemany):
            if capturing.is_set():
                captured.append((statement, parameters))

        out, plans = [], []
        for name, path in pages(engine):
            for _ in range(2):  # warm: plans, caches, templates
                assert client.get(path).status_code == 200, path
            times = []
            fresh = "first render" in name
            for _ in range(reps):
                if fresh:  # the alerts view is read at most every ALERTS_TTL_S per process: make this one read it
                    app.extensions.pop("jobprocessor_dashboard_alerts", None)
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            captured.clear()
            capturing.set()
            if fresh:
                app.extensions.pop("jobprocessor_dashboard_alerts", None)
            client.get(path)
            capturing.clear()
            statements = [(s, p) for s, p in captured if s.lstrip().upper().startswith(("SELECT", "WITH"))]
            out.append({"page": name, "path": path, "median_ms": round(statistics.median(times), 1),
                        "p95_ms": round(_pct(times, 95), 1), "queries": len(statements)})
            log(f"  {name:34} median {out[-1]['median_ms']:7.1f} ms  p95 {out[-1]['p95_ms']:7.1f} ms  "
                f"({len(statements)} queries)")
            plans.append(f"\n=== {name}: GET {path} (median {out[-1]['median_ms']} ms) ===")
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                for statement, parameters in statements:
                    sql = cursor.mogrify(statement, parameters).decode()
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    plans.append("\n-- " + re.sub(r"\s+", " ", sql)[:400] + "\n" + plan)
                raw.rollback()
            finally:
                raw.close()
        RESULTS.mkdir(exist_ok=True)
        PLANS_FILE.write_text("\n".join(plans) + "\n")
    return out


# --- the claim, with and without the overview refreshed every second ---------------------------------------------

def claimer(url: str, stop, phase, samples) -> None:
    engine = create_engine(normalise_database_url(url), pool_size=1,
                           connect_args={"application_name": "bench-claimer"})
    with engine.connect() as conn:
        stat = Path(f"/proc/{conn.execute(text('SELECT pg_backend_pid()')).scalar_one()}/stat")
        conn.rollback()
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

        def server_cpu_ms() -> float:  # the claimer's server process (steadier than wall time on a busy machine)
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                return float("nan")
            return (int(fields[11]) + int(fields[12])) * tick_ms

        while not stop.is_set():
            cpu = server_cpu_ms()
            started = time.perf_counter()
            trans = conn.begin()
            result = queries.claim(conn, limit=100, worker="bench", lease_s=300)
            trans.rollback()
            samples.append((phase.value, (time.perf_counter() - started) * 1000, len(result.jobs),
                            server_cpu_ms() - cpu))
            time.sleep(0.02)
    engine.dispose()


def _watch_locks(url: str, watching, waits: list, looks: list) -> None:
    """Every 20 ms: is the claimer's backend waiting for a lock?"""
    engine = create_engine(normalise_database_url(url), pool_size=1)
    with engine.connect() as conn:
        while not watching.is_set():
            waits[0] += int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                              "'bench-claimer' AND wait_event_type = 'Lock'")).scalar_one())
            conn.rollback()
            looks[0] += 1
            time.sleep(0.02)
    engine.dispose()


def measure_claims(url: str, phase_s: float, phases: int = 4) -> dict:
    import requests

    from tests.support.gunicorn import Gunicorn

    env = {"DASHBOARD_SECRET": OPERATOR, "DASHBOARD_SESSION_KEY": SESSION_KEY}
    with Gunicorn(url, workers=2, threads=4, env=env) as server:
        http = requests.Session()
        form = http.get(server.base + "/dashboard/signin").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        http.post(server.base + "/dashboard/signin", data={"secret": OPERATOR, "csrf_token": token})
        manager = multiprocessing.Manager()
        samples, stop, phase = manager.list(), manager.Event(), manager.Value("i", 0)
        process = multiprocessing.Process(target=claimer, args=(url, stop, phase, samples))
        process.start()
        refreshes: list[float] = []
        time.sleep(3)  # warm
        del samples[:]
        waits, looks, watching = [0], [0], threading.Event()
        watcher = threading.Thread(target=_watch_locks, args=(url, watching, waits, looks))
        watcher.start()
        for condition in [i % 2 for i in range(phases)]:
            phase.value = condition
            log(f"  claims with the overview refreshed every second: {'on' if condition else 'off'}")
            ends = time.monotonic() + phase_s
            while time.monotonic() < ends:
                if condition:
                    started = time.perf_counter()
                    assert http.get(server.base + "/dashboard/?refresh=0").status_code == 200
                    refreshes.append((time.perf_counter() - started) * 1000)
                    time.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
                else:
                    time.sleep(0.2)
        stop.set()
        watching.set()
        watcher.join()
        process.join(30)
        rows = list(samples)
    out = {}
    for condition, label in ((0, "without"), (1, "with the overview every 1 s")):
        ms = [r[1] for r in rows if r[0] == condition]
        cpu = [r[3] for r in rows if r[0] == condition]
        out[label] = {"claims": len(ms), "p50_ms": round(_pct(ms, 50), 2), "p99_ms": round(_pct(ms, 99), 2),
                      "mean_ms": round(statistics.fmean(ms), 2), "server_cpu_ms_per_claim":
                      round(statistics.fmean(cpu), 2), "jobs_per_claim": rows[0][2] if rows else 0}
    out["claimer seen waiting for a lock"] = f"{waits[0]} of {looks[0]} looks"
    out["load average at the end"] = os.getloadavg()
    out["overview under load"] = {"requests": len(refreshes), "p50_ms": round(_pct(refreshes, 50), 1),
                                  "p99_ms": round(_pct(refreshes, 99), 1)}
    return out


def measure_bulk(url: str, before_s: float) -> dict:
    """Claims from a process of their own before and while a bulk retry of every failed job runs (batches of 1000,
    jobprocessor/bulk), and how often the claimer's backend was seen waiting for a lock (pg_stat_activity, every
    20 ms) meanwhile."""
    from jobprocessor import bulk

    engine = create_engine(normalise_database_url(url))
    manager = multiprocessing.Manager()
    samples, stop, phase = manager.list(), manager.Event(), manager.Value("i", 0)
    process = multiprocessing.Process(target=claimer, args=(url, stop, phase, samples))
    process.start()
    time.sleep(3)
    del samples[:]
    time.sleep(before_s)
    waits, looks, watching = [0], [0], threading.Event()
    watcher = threading.Thread(target=_watch_locks, args=(url, watching, waits, looks))
    watcher.start()
    phase.value = 1
    started = time.monotonic()
    result = bulk.run(engine, bulk.parse_request({"action": "retry", "filter": {"status": "failed"}}),
                      bulk.Actor("cli", "bench"))
    took = time.monotonic() - started
    phase.value = 2
    watching.set()
    watcher.join()
    stop.set()
    process.join(30)
    rows = list(samples)
    out = {"bulk": {"matched": result.matched, "changed": result.changed, "batches": result.batches,
                    "seconds": round(took, 1), "jobs_per_s": round(result.changed / took)},
           "claimer seen waiting for a lock": f"{waits[0]} of {looks[0]} looks"}
    for condition, label in ((0, "claims before"), (1, "claims during the bulk retry")):
        ms = [r[1] for r in rows if r[0] == condition]
        cpu = [r[3] for r in rows if r[0] == condition]
        out[label] = {"claims": len(ms), "p50_ms": round(_pct(ms, 50), 2), "p99_ms": round(_pct(ms, 99), 2),
                      "max_ms": round(max(ms), 2), "server_cpu_ms_per_claim": round(statistics.fmean(cpu), 2)}
    out["load average at the end"] = os.getloadavg()
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--live-share", type=float, default=0.25, help="share of the jobs in the live queue")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--claim-phase-s", type=float, default=30)
    parser.add_argument("--claim-phases", type=int, default=4, help="alternating phases, off first")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--pages-only", action="store_true")
    parser.add_argument("--bulk", action="store_true", help="part 3 only (on a kept database): claims during a "
                                                            "bulk retry of every failed job")
    parser.add_argument("--tag", default="",
                        help="results go to bench/results/dashboard_<tag>.json and dashboard_plans_<tag>.txt")
    args = parser.parse_args()
    url = database_url(args.keep)
    if args.bulk:
        figures = measure_bulk(url, args.claim_phase_s)
        for label, value in figures.items():
            log(f"  {label}: {value}")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"dashboard_bulk{'_' + args.tag if args.tag else ''}.json").write_text(
            json.dumps(figures, indent=2) + "\n")
        return
    if not args.keep:
        log(f"filling {DBNAME}")
        fill(url, args.jobs, args.stores, args.live_share)
    log("page server times (Flask WSGI in-process, real PostgreSQL)")
    global PLANS_FILE
    suffix = f"_{args.tag}" if args.tag else ""
    PLANS_FILE = RESULTS / f"dashboard_plans{suffix}.txt"
    result = {"pages": measure_pages(url, args.reps)}
    if not args.pages_only:
        log("claim latency without and with the overview refreshed every second")
        result["claims"] = measure_claims(url, args.claim_phase_s, args.claim_phases)
        for label, figures in result["claims"].items():
            log(f"  {label}: {figures}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dashboard{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"results in {RESULTS / f'dashboard{suffix}.json'}, plans in {PLANS_FILE}")


if __name__ == "__main__":
    main()
