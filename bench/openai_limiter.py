"""The shared OpenAI limiter under load (issue 4): how much of the budget is used, and how close a big backlog gets
to the floor the limit sets, with no 429.

    .venv/bin/python bench/openai_limiter.py                 # every case, defaults below
    .venv/bin/python bench/openai_limiter.py --case backlog --scale 5

Everything real but OpenAI: gunicorn (wsgi:app, 3 workers) on loopback, PostgreSQL (DATABASE_URL, else the
embedded server with database jobprocessor_bench_openai, schema by the migrations), `callers` threads here each
POSTing /process-pending back to back; product.optimize jobs calling the fake OpenAI server of the tests
(tests/support/fake_openai.py) through the official SDK. The fake enforces the same requests/min and tokens/min as the
limiter is configured with (OpenAI's bucket semantics, full at start) and answers after 0.2-0.6 s.

Cases:
- utilisation: more work than the budget for `--seconds`; achieved requests/min over the span of served requests,
  as a fraction of OPENAI_RPM.
- backlog: the seed's figure scaled. "5,000 jobs at 450 RPM cannot finish in under 11.1 minutes": 5,000 jobs at
  450 x scale RPM (and TPM) cannot finish in under 11.1 / scale minutes. Reports the makespan (first request to
  last job completed) against that floor.
- store: the limiter's own ceiling, without HTTP: processes x threads doing reserve + settle on the shared row.
The first two check: 0 x 429 from the fake, every job completed, each job called exactly once, every reservation
settled.
- accounting (issue 10): OpenAI's token accounting, before and after, side by side in one run. The fake counts
  tokens as OpenAI documents it (accounting="openai": each request on arrival the larger of its cap and its input
  characters / 4, nothing back) and allows --server-rpm / --server-tpm (500 / 500,000, its bucket a whole minute as
  OpenAI's); the project is told --rpm / --tpm (450 / 450,000); answers need 150-400 completion tokens (1 % need
  600-900), latency 4-12 s. "before" runs the code of --before (default: where this branch left main) from a
  `git archive` of it, against the same database (migrated by this tree: extra columns and tables it ignores);
  "after" runs this tree. Reports requests/min from the second minute on, 429s, and tokens charged per request.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jobprocessor.config import normalise_database_url  # noqa: E402
from tests.support.gunicorn import Gunicorn  # noqa: E402 (the tests' gunicorn runner, reused)
from tests.support.settings import AUTH, make_settings  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402

LATENCY_S = (0.2, 0.6)


def database_url() -> str:
    from jobprocessor import devdb

    return devdb.database_url("DATABASE_URL", "jobprocessor_bench_openai")


def migrate(url: str) -> None:
    from flask_migrate import upgrade

    from jobprocessor import create_app

    app = create_app(make_settings(url))
    with app.app_context():
        upgrade()
        from jobprocessor.extensions import db

        db.engine.dispose()


def reset(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs RESTART IDENTITY"))
        conn.execute(text("DELETE FROM rate_limiter_waits"))
        conn.execute(text("DELETE FROM rate_limiter"))
        conn.execute(text("DELETE FROM openai_output_stats"))
        conn.execute(text("DELETE FROM openai_output_retry_caps"))


def enqueue(base: str, n: int) -> list[int]:
    ids = []
    for start in range(0, n, 1000):
        jobs = [{"type": "product.optimize", "store_id": f"store-{i % 10}",
                 "payload": {"product": {"title": f"Linen shirt {i}", "description": "Breathable summer shirt.",
                                         "sku": f"LS-{i:05d}"}, "language": "en"}}
                for i in range(start, min(n, start + 1000))]
        response = requests.post(base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=60)
        response.raise_for_status()
        ids += response.json()["ids"]
    return ids


def run(url: str, engine, *, rpm: int, jobs: int, callers: int, concurrency: int, budget_s: float, limit: int,
        stop_after_s: float | None = None) -> dict:
    """One run: `jobs` jobs through gunicorn at `rpm` (tpm = 1000 x rpm, the seed's ratio). With stop_after_s, the
    callers stop then (the utilisation case); else when every job is done."""
    reset(engine)
    tpm = rpm * 1000
    with FakeOpenAI(rpm=rpm, tpm=tpm, latency_s=LATENCY_S) as fake, \
            Gunicorn(url, workers=3, threads=max(4, callers),
                     env={"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
                          "OPENAI_RPM": str(rpm), "OPENAI_TPM": str(tpm), "OPENAI_MAX_OUTPUT_TOKENS": "400",
                          "JOBS_CONCURRENCY": str(concurrency), "DB_POOL_MAX": "40", "LOG_LEVEL": "WARNING"}) as server:
        ids = enqueue(server.base, jobs)
        done, errors, calls = threading.Event(), [], Counter()

        def caller() -> None:
            session = requests.Session()
            while not done.is_set():
                try:
                    response = session.post(server.base + "/process-pending",
                                            json={"limit": limit, "budget_s": budget_s}, headers=AUTH,
                                            timeout=budget_s + 30)
                    calls[response.status_code] += 1
                    if response.status_code != 200:
                        errors.append(response.text[:300])
                    elif response.json()["claimed"] == 0:
                        time.sleep(0.2)
                except requests.RequestException as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
        started = time.time()
        for thread in threads:
            thread.start()
        while True:
            time.sleep(0.5)
            if stop_after_s is not None and time.time() - started >= stop_after_s:
                break
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')")).scalar()
            if not left:
                break
        done.set()
        for thread in threads:
            thread.join(budget_s + 60)
    served = sorted(c.at for c in fake.snapshot() if c.status == 200)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        last_done = conn.execute(text("SELECT extract(epoch FROM max(completed_at)) FROM jobs")).scalar()
        limiter = conn.execute(text("SELECT reserved_requests, settled_requests FROM rate_limiter")).first()
    per_job = Counter(c.job_id for c in fake.snapshot() if c.status == 200)
    span = served[-1] - served[0] if len(served) > 1 else 0.0
    return {
        "rpm": rpm, "jobs": jobs, "served": len(served), "throttled_429": fake.count(429),
        "span_s": span, "achieved_rpm": (len(served) - 1) / span * 60 if span else 0.0,
        "makespan_s": float(last_done) - served[0] if served and last_done else None,
        "statuses": statuses, "called_twice": sum(1 for n in per_job.values() if n > 1),
        "never_called": len(set(ids) - set(per_job)),
        "reserved": limiter[0] if limiter else 0, "settled": limiter[1] if limiter else 0,
        "cron_calls": sum(calls.values()), "errors": errors[:3],
        "load_avg": os.getloadavg(),
    }


def _store_worker(url: str, threads: int, seconds: float, queue) -> None:
    """One process: `threads` threads each doing reserve + settle (no HTTP, no sleeping for slots) for `seconds`."""
    from jobprocessor.ratelimit import LimiterStore
    from jobprocessor.ratelimit.core import Limits, Settlement

    engine = create_engine(normalise_database_url(url), pool_size=threads, max_overflow=0)
    store, limits = LimiterStore(engine), Limits(rpm=10_000_000, tpm=10_000_000_000)
    counts, stop_at = [], time.monotonic() + seconds

    def loop() -> None:
        n = 0
        while time.monotonic() < stop_at:
            decision = store.reserve(limits, 800, max_wait_s=1e9)
            store.settle(limits, decision.reservation, Settlement(sent=True, used_tokens=600, succeeded=True))
            n += 1
        counts.append(n)

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    engine.dispose()
    queue.put(sum(counts))


def store_ceiling(url: str, engine, processes: int, threads: int, seconds: float) -> float:
    """Reserve + settle pairs per second the shared row sustains: the limiter's own ceiling, in calls/s."""
    import multiprocessing

    reset(engine)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_store_worker, args=(url, threads, seconds, queue)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    total = sum(queue.get(timeout=seconds + 120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def export_tree(ref: str) -> Path:
    """`git archive` of `ref` into a temporary directory (the working tree is not touched)."""
    target = Path(tempfile.mkdtemp(prefix="bench-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def accounting_run(url: str, engine, root: Path, label: str, args) -> dict:
    """One side of the accounting case: the code in `root` for args.minutes against the fake in OpenAI mode."""
    reset(engine)
    minutes = args.minutes
    jobs = int(args.rpm * minutes * 1.3)
    with FakeOpenAI(accounting="openai", rpm=args.server_rpm, tpm=args.server_tpm, latency_s=(4.0, 12.0),
                    completion_tokens=(150, 400), long_answers=(0.01, (600, 900)), seed=10,
                    rate_headers=not args.no_rate_headers) as fake, \
            Gunicorn(url, workers=3, threads=args.callers + 2, root=root,
                     env={"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
                          "OPENAI_RPM": str(args.rpm), "OPENAI_TPM": str(args.tpm),
                          "JOBS_CONCURRENCY": str(args.concurrency), "DB_POOL_MAX": "40",
                          "LOG_LEVEL": "WARNING"}) as server:
        enqueue(server.base, jobs)
        done = threading.Event()

        def caller() -> None:
            session = requests.Session()
            while not done.is_set():
                try:
                    response = session.post(server.base + "/process-pending",
                                            json={"limit": 200, "budget_s": args.budget}, headers=AUTH,
                                            timeout=args.budget + 30)
                    if response.status_code == 200 and response.json()["claimed"] == 0:
                        time.sleep(0.2)
                except requests.RequestException:
                    time.sleep(0.2)

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(args.callers)]
        started = time.time()
        for thread in threads:
            thread.start()
        for minute in range(1, minutes + 1):
            time.sleep(max(0.0, started + 60 * minute - time.time()))
            calls = [c for c in fake.snapshot() if started + 60 * (minute - 1) <= c.at < started + 60 * minute]
            ok = [c for c in calls if c.status == 200]
            print(f"  {label} minute {minute}: {len(ok)} requests served, {len(calls) - len(ok)} x 429, "
                  f"{sum(c.charged for c in ok) / max(1, len(ok)):.0f} tokens charged per request, "
                  f"caps {sorted({c.max_tokens for c in ok})[:3]}...", flush=True)
        calls = fake.snapshot()
        done.set()
        with engine.connect() as conn:
            row = conn.execute(text("SELECT reserved_requests, reserved_tokens, settled_requests, "
                                    "settled_reserved_tokens, used_tokens, throttled FROM rate_limiter")).first()
            statuses = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
    window = [c for c in calls if started + 60 <= c.at < started + 60 * minutes]
    served = [c for c in window if c.status == 200]
    all_served = [c for c in calls if c.status == 200]
    # what the limiter kept counted per request after settling: before, the reservation minus the give-back (the
    # usage); after, the whole reservation (nothing is given back)
    kept = row.reserved_tokens - (row.settled_reserved_tokens - row.used_tokens) if label == "before" \
        else row.reserved_tokens
    return {
        "label": label, "rpm_from_minute_2": len(served) / (minutes - 1), "served": len(all_served),
        "throttled_429": fake.count(429), "limiter_throttled": row.throttled,
        "server_charge_per_request": sum(c.charged for c in all_served) / max(1, len(all_served)),
        "reserved_per_request": row.reserved_tokens / max(1, row.reserved_requests),
        "kept_per_request": kept / max(1, row.reserved_requests),
        "cut_offs": sum(1 for c in all_served if c.finish_reason == "length"),
        "last_cap": all_served[-1].max_tokens if all_served else None, "statuses": statuses,
        "load_avg": os.getloadavg(),
    }


def accounting_case(url: str, engine, args) -> None:
    before_ref = args.before or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True,
                                               capture_output=True, text=True).stdout.strip()
    before_root = export_tree(before_ref)
    print(f"\naccounting: server (fake, accounting=openai) {args.server_rpm} RPM / {args.server_tpm} TPM"
          f"{', no x-ratelimit-* headers' if args.no_rate_headers else ''}; project told {args.rpm} / {args.tpm}; "
          f"{args.minutes} min each; before = {before_ref[:12]}, after = this tree", flush=True)
    results = [accounting_run(url, engine, before_root, "before", args),
               accounting_run(url, engine, ROOT, "after", args)]
    print("\n| | requests/min from minute 2 (of " + str(args.rpm) + ") | 429s | server's charge per request | "
          "limiter reserved per request | limiter kept per request | cut-offs | last cap | jobs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['label']} | {r['rpm_from_minute_2']:.1f} ({r['rpm_from_minute_2'] / args.rpm:.1%}) | "
              f"{r['throttled_429']} | {r['server_charge_per_request']:.0f} | {r['reserved_per_request']:.0f} | "
              f"{r['kept_per_request']:.0f} | {r['cut_offs']} | {r['last_cap']} | {r['statuses']} |")
    print(f"load average at the end: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("utilisation", "backlog", "store", "accounting", "all"), default="all")
    parser.add_argument("--rpm", type=int, default=None, help="the limit the project is told: utilisation case "
                        "(default 300), accounting case (default 450)")
    parser.add_argument("--tpm", type=int, default=450_000, help="accounting case: the told TPM (default 450000)")
    parser.add_argument("--server-rpm", type=int, default=500, help="accounting case: the fake's RPM (default 500)")
    parser.add_argument("--server-tpm", type=int, default=500_000, help="accounting case: the fake's TPM")
    parser.add_argument("--minutes", type=int, default=4, help="accounting case: minutes per side (default 4)")
    parser.add_argument("--no-rate-headers", action="store_true", help="accounting case: the fake sends no "
                        "x-ratelimit-* headers (each limiter by its own count)")
    parser.add_argument("--before", default=None, help="accounting case: the git ref of 'before' (default: the "
                        "merge-base of HEAD and main)")
    parser.add_argument("--seconds", type=float, default=90, help="utilisation case: how long (default 90)")
    parser.add_argument("--scale", type=float, default=5, help="backlog case: 450 x scale RPM (default 5)")
    parser.add_argument("--backlog-jobs", type=int, default=5000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=None, help="JOBS_CONCURRENCY (default 16; accounting: "
                        "30, for the ~60 calls in flight 450/min at 8 s needs)")
    parser.add_argument("--budget", type=float, default=90, help="budget_s of each call (default 90: product."
                        "optimize's 60 s timeout leaves 30 s of each call to start jobs in)")
    args = parser.parse_args()
    if args.case == "accounting":
        args.rpm = args.rpm or 450
        args.concurrency = args.concurrency or 30
    args.rpm = args.rpm or 300
    args.concurrency = args.concurrency or 16
    url = database_url()
    migrate(url)
    engine = create_engine(normalise_database_url(url))
    print(f"machine: {os.cpu_count()} cores, load average before: {os.getloadavg()}")
    if args.case in ("store", "all"):
        for processes, threads in ((1, 1), (3, 1), (3, 8)):
            pairs = store_ceiling(url, engine, processes, threads, 10.0)
            print(f"\nstore: {processes} process(es) x {threads} thread(s): {pairs:.0f} reserve+settle pairs/s "
                  f"= a ceiling of {pairs * 60:,.0f} calls/min; load avg {os.getloadavg()}")
    if args.case in ("utilisation", "all"):
        r = run(url, engine, rpm=args.rpm, jobs=int(args.rpm * args.seconds / 60 * 1.5), callers=args.callers,
                concurrency=args.concurrency, budget_s=args.budget, limit=200, stop_after_s=args.seconds)
        print(f"\nutilisation: limit {r['rpm']} RPM for {args.seconds:.0f} s: served {r['served']} requests over "
              f"{r['span_s']:.1f} s = {r['achieved_rpm']:.1f} RPM = {r['achieved_rpm'] / r['rpm']:.1%} of the limit; "
              f"429s: {r['throttled_429']}; called twice: {r['called_twice']}; reserved/settled: {r['reserved']}/"
              f"{r['settled']}; cron calls {r['cron_calls']}; load avg {r['load_avg']}; errors {r['errors']}")
    if args.case == "accounting":  # minutes long: not part of "all"
        accounting_case(url, engine, args)
    if args.case in ("backlog", "all"):
        rpm = int(450 * args.scale)
        floor_s = args.backlog_jobs / rpm * 60
        r = run(url, engine, rpm=rpm, jobs=args.backlog_jobs, callers=args.callers, concurrency=args.concurrency,
                budget_s=args.budget, limit=500)
        print(f"\nbacklog: {r['jobs']} jobs at {rpm} RPM / {rpm * 1000} TPM (450 x {args.scale:g}): floor "
              f"{floor_s:.1f} s (= 11.1 min / {args.scale:g}); makespan {r['makespan_s']:.1f} s = "
              f"{r['makespan_s'] / floor_s:.3f} x the floor (scaled back: {r['makespan_s'] / floor_s * 5000 / 450:.2f} "
              f"min for 5,000 jobs at 450 RPM); achieved {r['achieved_rpm']:.1f} RPM = "
              f"{r['achieved_rpm'] / rpm:.1%} of the limit; 429s: {r['throttled_429']}; statuses {r['statuses']}; "
              f"called twice {r['called_twice']}, never called {r['never_called']}; reserved/settled "
              f"{r['reserved']}/{r['settled']}; cron calls {r['cron_calls']}; load avg {r['load_avg']}; "
              f"errors {r['errors']}")
    engine.dispose()


if __name__ == "__main__":
    main()
