"""`utilisation`: one call with a budget and plenty of short due jobs; how much of the handler threads' time it uses.

Issue 10's figure: one call `budget_s=20`, `limit=1000`, `JOBS_CONCURRENCY=8`, 2,000 due jobs of 0.2 s that declare
no timeout: >= 90 % of the threads' time busy, answered within budget + 2 s.

Busy share = sum of the handlers' own run times (each bench.sleep job records it) / (JOBS_CONCURRENCY x the call's
duration). A call that ends early can look busy by that measure, so the share of the budget's thread time (/
(JOBS_CONCURRENCY x budget_s)) is printed beside it: that is the figure the issue quotes for today (1 %).
"""
from __future__ import annotations

import time

import requests
from sqlalchemy import text

from .common import (AUTH, LoadSampler, RunInfo, database_url, enqueue, fresh_schema, parse_env, server,
                     status_counts, write_results)


def add_arguments(parser) -> None:
    parser.add_argument("--jobs", type=int, default=2000, help="due bench.sleep jobs (default 2000)")
    parser.add_argument("--job-s", type=float, default=0.2, help="each job's run time, s (default 0.2)")
    parser.add_argument("--budget", type=float, default=20, help="budget_s of the call (default 20)")
    parser.add_argument("--limit", type=int, default=1000, help="limit of the call (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="JOBS_CONCURRENCY (default 8)")


def run(args, command: str) -> int:
    url = database_url()
    engine = fresh_schema(url)
    env = {"JOBS_CONCURRENCY": str(args.concurrency), **parse_env(args.env)}
    print(f"utilisation: one POST /process-pending?limit={args.limit}&budget_s={args.budget:g}, "
          f"JOBS_CONCURRENCY={args.concurrency}, {args.jobs:,} due bench.sleep jobs of {args.job_s:g} s "
          f"(no declared timeout); gunicorn {args.workers} x {args.threads}; extra env {parse_env(args.env) or '-'}",
          flush=True)
    with LoadSampler() as load, server(url, env, args.workers, args.threads) as srv:
        enqueue(srv.base, [{"type": "bench.sleep", "payload": {"seconds": args.job_s}}] * args.jobs, chunk=1000)
        called = time.time()
        clock = time.monotonic()
        response = requests.post(srv.base + "/process-pending", params={"limit": args.limit, "budget_s": args.budget},
                                 headers=AUTH, timeout=args.budget + 120)
        duration = time.monotonic() - clock
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        time.sleep(1.0)  # a handler the call abandoned would record its outcome itself: give it a moment
    with engine.connect() as conn:
        runs = conn.execute(text(
            "SELECT (result->>'started')::float8, (result->>'ran_s')::float8 FROM jobs "
            "WHERE type = 'bench.sleep' AND result ? 'ran_s'")).all()
        attempts = dict(conn.execute(text("SELECT attempts, count(*) FROM jobs GROUP BY 1")).all())
    statuses = status_counts(engine)
    busy_s = sum(ran for _, ran in runs)
    starts = sorted(started - called for started, _ in runs)
    ends = sorted(started - called + ran for started, ran in runs)
    threads_s = args.concurrency * duration
    busy_share = busy_s / threads_s if threads_s else 0.0
    budget_share = busy_s / (args.concurrency * args.budget)
    within = duration <= args.budget + 2.0
    result = {
        "run": RunInfo(command).as_dict(), "case": "utilisation",
        "settings": {"jobs": args.jobs, "job_s": args.job_s, "budget_s": args.budget, "limit": args.limit,
                     "JOBS_CONCURRENCY": args.concurrency, "gunicorn": f"{args.workers}x{args.threads}",
                     "env": parse_env(args.env)},
        "http_status": response.status_code, "answer": {k: v for k, v in answer.items() if k != "stores"},
        "call_s": round(duration, 3), "handlers_ran": len(runs), "handler_busy_s": round(busy_s, 3),
        "busy_share_of_call": round(busy_share, 4), "busy_share_of_budget": round(budget_share, 4),
        "first_start_s": round(starts[0], 3) if starts else None, "last_start_s": round(starts[-1], 3) if starts
        else None, "last_end_s": round(ends[-1], 3) if ends else None,
        "statuses_after": statuses, "attempts_after": {str(k): v for k, v in sorted(attempts.items())},
        "targets": {"busy_share_of_call>=0.90": busy_share >= 0.90, "answered_within_budget+2s": within},
        "load_average": load.summary(),
    }
    counts = ", ".join(f"{k} {answer[k]}" for k in ("claimed", "succeeded", "retried", "failed", "released",
                                                    "rescued", "abandoned") if k in answer)
    print(f"\n  HTTP {response.status_code}: {counts}")
    print(f"  call duration {duration:.2f} s (budget {args.budget:g} s; target <= {args.budget + 2:g} s: "
          f"{'met' if within else 'NOT met'})")
    if starts:
        print(f"  {len(runs):,} handlers ran, started between {starts[0]:.2f} s and {starts[-1]:.2f} s after the "
              f"call was sent, the last ended at {ends[-1]:.2f} s")
    print(f"  handler time {busy_s:.1f} s = {busy_share:.1%} of the threads' time during the call "
          f"({args.concurrency} x {duration:.2f} s; target >= 90 %: {'met' if busy_share >= 0.9 else 'NOT met'}) "
          f"= {budget_share:.1%} of the budget's thread time ({args.concurrency} x {args.budget:g} s)")
    print(f"  jobs after the call: {statuses}; attempts: {result['attempts_after']}")
    print(f"  {load.line()}")
    print(f"  results: {write_results('utilisation', args.tag, result)}")
    return 0
