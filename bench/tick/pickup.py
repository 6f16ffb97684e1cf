"""`pickup`: how soon a job enqueued while a call is busy starts (issue 10: p50 <= 1 s, p99 <= 3 s).

The README's cron (GET /process-pending, no parameters, once a minute). Just before each tick the bench enqueues
`--holds` long bench.sleep jobs (`--hold-s` seconds, priority high, no declared timeout) that keep that tick's call
running with its other handler threads free; then, at `--probes` random moments while they run (uniform in
[2 s, hold-s - 3 s] after the tick was fired), it enqueues one bench.probe job each through POST /jobs. A probe's
pick-up latency = the time its handler recorded when it started - jobs.created_at (both this host's clock). One
more tick is fired after the last busy one, so a probe the busy call did not take is started by the next tick, as
it would be in production (its latency is then about the time to that tick).
"""
from __future__ import annotations

import random
import threading
import time

import requests
from sqlalchemy import text

from .common import (AUTH, Cron, LoadSampler, RunInfo, database_url, default, enqueue, fresh_schema, parse_env,
                     percentile, server, tick_record, tick_row, write_results)

CADENCE_S = 60.0
MAX_TIME_S = 120.0  # the README's --max-time


def add_arguments(parser) -> None:
    parser.add_argument("--minutes", type=int, default=5, help="busy ticks, one a minute (default 5)")
    parser.add_argument("--probes", type=int, default=6, help="probe jobs enqueued during each busy tick (default 6)")
    parser.add_argument("--holds", type=int, default=2, help="long jobs that keep each tick busy (default 2)")
    parser.add_argument("--hold-s", type=float, default=25.0, help="how long each long job runs (default 25; the "
                        "service's default timeout, 30 s, lets it start today)")
    parser.add_argument("--cadence", type=float, default=CADENCE_S, help="cron cadence, s (default 60)")
    parser.add_argument("--method", choices=("GET", "POST"), default="GET")
    parser.add_argument("--query", default="", help="query string for the cron URL (default none)")
    parser.add_argument("--seed", type=int, default=10)


def run(args, command: str) -> int:
    rng = random.Random(args.seed)
    url = database_url()
    engine = fresh_schema(url)
    extra_env = parse_env(args.env)
    print(f"pickup: the README cron every {args.cadence:g} s (limit and budget_s: the server's defaults, "
          f"{default('JOBS_MAX_PER_RUN')} and {default('JOBS_MAX_RUNTIME_S'):g} s, unless --query); before each of "
          f"{args.minutes} ticks {args.holds} bench.sleep jobs of {args.hold_s:g} s, during each {args.probes} "
          f"probes at random moments; gunicorn {args.workers} x {args.threads}; extra env {extra_env or '-'}",
          flush=True)
    probes: list[dict] = []
    lock = threading.Lock()
    with LoadSampler() as load, server(url, extra_env, args.workers, args.threads) as srv:
        posters: list[threading.Thread] = []

        def post_probe(at: float, tick: int) -> None:
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            sent = time.time()
            response = requests.post(srv.base + "/jobs", json={"type": "bench.probe", "store_id": "probe-store",
                                                               "payload": {"tick": tick}},
                                     headers=AUTH, timeout=30)
            with lock:
                probes.append({"tick": tick, "sent": sent, "status": response.status_code,
                               "id": (response.json().get("ids") or [None])[0] if response.ok else None})

        def before_tick(i: int) -> None:
            if i >= args.minutes:
                return
            enqueue(srv.base, [{"type": "bench.sleep", "priority": "high", "store_id": "hold-store",
                                "payload": {"seconds": args.hold_s}}] * args.holds)
            fired = time.time()
            for offset in sorted(rng.uniform(2.0, max(2.5, args.hold_s - 3.0)) for _ in range(args.probes)):
                thread = threading.Thread(target=post_probe, args=(fired + offset, i), daemon=True)
                thread.start()
                posters.append(thread)

        cron = Cron(srv.base, args.cadence, MAX_TIME_S * args.cadence / CADENCE_S, method=args.method,
                    query=args.query, before_tick=before_tick)
        print(f"  cron: {cron.shown()}", flush=True)
        t0 = cron.start(args.minutes + 1)
        time.sleep(args.minutes * args.cadence + 1)
        for thread in posters:
            thread.join()
        ids = [p["id"] for p in probes if p["id"] is not None]
        # wait (up to one more cadence + the answer time) for the last tick to start every probe
        deadline = time.time() + args.cadence + MAX_TIME_S
        while time.time() < deadline:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND NOT result ? 'started'"),
                                    {"ids": ids}).scalar_one()
            if not left:
                break
            time.sleep(1.0)
        cron.stop()
        ticks = cron.finished()
    with engine.connect() as conn:
        rows = {row[0]: row for row in conn.execute(text(
            "SELECT id, extract(epoch FROM created_at)::float8, extract(epoch FROM started_at)::float8, "
            "(result->>'started')::float8, status FROM jobs WHERE id = ANY(:ids)"), {"ids": ids})}
    latencies, column_latencies, samples, not_started = [], [], [], 0
    for probe in sorted(probes, key=lambda p: p["sent"]):
        row = rows.get(probe["id"])
        if row is None or row[3] is None:
            not_started += 1
            continue
        _, created, started_col, started, status = row
        tick = next((t for t in ticks if t.index == probe["tick"]), None)
        busy = tick is not None and tick.seconds is not None and tick.fired + tick.seconds > created
        latencies.append(started - created)
        if started_col is not None:
            column_latencies.append(started_col - created)
        samples.append({"tick": probe["tick"], "sent_s": round(probe["sent"] - t0, 3),
                        "created_s": round(created - t0, 3), "latency_s": round(started - created, 3),
                        "started_at_column_minus_created_s": None if started_col is None
                        else round(started_col - created, 3), "call_still_running": busy})
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    while_busy = sum(1 for s in samples if s["call_still_running"])
    print("  ticks:")
    for tick in ticks:
        print(tick_row(tick, t0))
    result = {
        "run": RunInfo(command).as_dict(), "case": "pickup",
        "settings": {"minutes": args.minutes, "probes_per_tick": args.probes, "holds": args.holds,
                     "hold_s": args.hold_s, "cadence_s": args.cadence, "method": args.method, "query": args.query,
                     "gunicorn": f"{args.workers}x{args.threads}", "env": extra_env},
        "probes": len(probes), "started": len(latencies), "not_started": not_started,
        "enqueued_while_their_call_ran": while_busy,
        "latency_s": {"p50": p50, "p90": percentile(latencies, 0.90), "p99": p99,
                      "max": max(latencies) if latencies else None, "min": min(latencies) if latencies else None},
        "started_at_column_latency_s": {"p50": percentile(column_latencies, 0.5),
                                        "p99": percentile(column_latencies, 0.99)},
        "targets": {"p50<=1s": p50 is not None and p50 <= 1.0, "p99<=3s": p99 is not None and p99 <= 3.0},
        "samples": samples, "ticks": [tick_record(t, t0) for t in ticks], "load_average": load.summary(),
    }
    if latencies:
        print(f"  {len(latencies)} of {len(probes)} probes started ({while_busy} enqueued while their tick's call "
              f"was still running); enqueue -> handler start: p50 {p50:.2f} s, p90 "
              f"{percentile(latencies, 0.9):.2f} s, p99 {p99:.2f} s, max {max(latencies):.2f} s, min "
              f"{min(latencies):.2f} s (target p50 <= 1 s, p99 <= 3 s)")
    if not_started:
        print(f"  {not_started} probes never started during the run")
    print(f"  {load.line()}")
    print(f"  results: {write_results('pickup', args.tag, result)}")
    return 0
