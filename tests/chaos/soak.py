"""Soak under chaos (`make chaos`): 100,000 jobs, 5% of runs failing at random, 8 concurrent cron callers, and a
gunicorn worker killed with SIGKILL every few seconds, against a real gunicorn and PostgreSQL on loopback.

The jobs are enqueued over HTTP while the callers already drain (batches of 1000, each job with an idempotency key,
so a batch whose worker was killed is simply sent again). At the end it checks, and exits non-zero if any fails:
  - the table holds exactly the jobs enqueued (no job lost, none duplicated by a re-sent batch);
  - every job is `completed` or `failed`;
  - the audit trail (tests/support/transitions.py): none completed twice, none changed or ran after it was final,
    attempts = runs started, none over max_attempts, no lease rescued before it ran out, none stuck in running;
  - the answered calls' counts add up to the table, call by call (claimed, succeeded, failed, retried+released),
    and the killed calls' share is what the audit trail attributes to them.
It prints the figures docs/RELIABILITY.md quotes.

    CHAOS_DATABASE_URL=postgresql://... python -m tests.chaos.soak [--jobs 100000] [--kill-every 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from sqlalchemy import text

from tests.support import transitions
from tests.chaos.setup_db import fresh_database
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH


def worker_pids(server: Gunicorn) -> list[int]:
    master = server.proc.pid
    try:
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except FileNotFoundError:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between two SIGKILLs")
    parser.add_argument("--fail", type=float, default=0.05, help="share of runs that raise")
    parser.add_argument("--lease", type=float, default=10.0, help="JOBS_LEASE_S")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    args = parser.parse_args()

    database_url = os.environ["CHAOS_DATABASE_URL"]
    engine = fresh_database(database_url)
    server = Gunicorn(database_url, workers=args.workers, threads=4)
    server.env.update(JOBPROCESSOR_HANDLERS="tests.support.job_handlers,tests.support.fault_handlers",
                      JOBS_LEASE_S=str(args.lease), JOBS_CONCURRENCY="8", DB_POOL_MAX="40", LOG_LEVEL="WARNING")
    summaries: list[dict] = []
    broken_calls = Counter()  # calls with no answer (their worker was killed) by exception type
    statuses = Counter()
    kills = []
    enqueue_resends = 0
    lock = threading.Lock()
    done = threading.Event()
    enqueued = threading.Event()
    started = time.monotonic()

    with server:
        session_base = server.base

        def enqueuer(batches: list[range]) -> None:
            nonlocal enqueue_resends
            http = requests.Session()
            for batch in batches:
                jobs = [{"type": "fault.flaky", "payload": {"n": i, "fail": args.fail}, "store_id": f"s{i % 50}",
                         "idempotency_key": f"soak-{i}"} for i in batch]
                while True:  # a batch whose worker was killed is sent again; the keys make that harmless
                    try:
                        response = http.post(session_base + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=60)
                        if response.status_code in (200, 201):
                            break
                    except requests.RequestException:
                        pass
                    with lock:
                        enqueue_resends += 1
                    time.sleep(0.2)

        def caller() -> None:
            http = requests.Session()
            while not done.is_set():
                try:
                    response = http.post(session_base + "/process-pending",
                                         params={"limit": args.limit, "budget_s": args.budget}, headers=AUTH,
                                         timeout=args.budget + 30)
                except requests.RequestException as exc:
                    with lock:
                        broken_calls[type(exc).__name__] += 1
                    http = requests.Session()
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        summaries.append(response.json())
                if response.status_code != 200 or response.json()["claimed"] == 0:
                    time.sleep(0.2)

        def killer() -> None:
            while not done.wait(args.kill_every):
                pids = worker_pids(server)
                if pids:
                    victim = random.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                    except ProcessLookupError:
                        pass

        batches = [range(start, min(start + 1000, args.jobs)) for start in range(0, args.jobs, 1000)]
        enqueuers = [threading.Thread(target=enqueuer, args=(batches[k::2],)) for k in range(2)]
        threads = [threading.Thread(target=caller) for _ in range(args.callers)] + [threading.Thread(target=killer)]
        for thread in enqueuers + threads:
            thread.start()
        for thread in enqueuers:
            thread.join()
        enqueued_at = time.monotonic() - started
        enqueued.set()
        deadline = started + args.max_minutes * 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                open_jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"))\
                    .scalar_one()
            if open_jobs == 0:
                break
            time.sleep(1)
        duration = time.monotonic() - started
        done.set()
        for thread in threads:
            thread.join(args.budget + 40)

    failures = check(engine, args, summaries)
    with engine.connect() as conn:
        table = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY 1")).all())
        executions, executed_jobs = conn.execute(text(
            "SELECT count(*), count(DISTINCT job_id) FROM job_executions")).one()
        retry_runs = conn.execute(text(
            "SELECT count(*) FROM job_transitions WHERE old_status = 'running' AND new_status = 'pending' "
            "AND NOT rescue AND NOT gave_back")).scalar_one()
        rescued = transitions.rescues(engine)
        max_attempts_seen = conn.execute(text("SELECT max(attempts) FROM jobs")).scalar_one()
        # a job whose last attempt died with its worker fails by lease expiry, not by its handler
        failed_by_lease = conn.execute(text(
            "SELECT count(*) FROM jobs WHERE status = 'failed' AND last_error LIKE 'lease expired:%'")).scalar_one()
        claimed_never_started = conn.execute(text(
            "SELECT count(*) FROM job_transitions t WHERE t.rescue AND NOT EXISTS (SELECT 1 FROM job_executions e "
            "WHERE e.job_id = t.job_id AND e.attempt = t.attempts)")).scalar_one()
    figures = {
        "jobs": args.jobs, "callers": args.callers, "gunicorn_workers": args.workers,
        "kill_every_s": args.kill_every, "lease_s": args.lease, "fail_share": args.fail,
        "duration_s": round(duration, 1), "enqueue_done_s": round(enqueued_at, 1),
        "jobs_per_s": round(args.jobs / duration, 1),
        "completed": table.get("completed", 0), "failed": table.get("failed", 0),
        "failed_by_lease_expiry": failed_by_lease, "failed_by_handler": table.get("failed", 0) - failed_by_lease,
        "other_states": {k: v for k, v in table.items() if k not in ("completed", "failed")},
        "workers_killed": len(kills), "calls_answered": len(summaries),
        "calls_cut_by_a_kill": sum(broken_calls.values()),
        "http_statuses": dict(statuses), "enqueue_batches_resent": enqueue_resends,
        "rescued_leases": rescued, "rescued_in_answered_calls": sum(s["rescued"] for s in summaries),
        "rescued_claimed_but_never_started": claimed_never_started,
        "executions": executions, "jobs_executed": executed_jobs, "retry_runs_after_failure": retry_runs,
        "reruns_after_a_kill": executions - executed_jobs - retry_runs,
        "max_attempts_seen": max_attempts_seen,
        "duplicates_completed_twice": 0 if "completed_twice" not in failures else len(failures["completed_twice"]),
        "violations": failures,
    }
    print(json.dumps(figures, indent=2))
    return 1 if failures else 0


def check(engine, args, summaries: list[dict]) -> dict:
    failures = dict(transitions.violations(engine))
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*), count(DISTINCT idempotency_key) FROM jobs")).one()
        open_jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed')"))\
            .scalar_one()
    if tuple(total) != (args.jobs, args.jobs):
        failures["job_count"] = list(total)
    if open_jobs:
        failures["not_final"] = open_jobs
    claims = transitions.claims_by_worker(engine)
    outcomes = transitions.outcomes_by_worker(engine)
    mismatched = []
    for s in summaries:
        token = s["worker"]
        written = (claims.get(token, 0), outcomes.get((token, "completed"), 0), outcomes.get((token, "failed"), 0),
                   outcomes.get((token, "pending"), 0))
        answered = (s["claimed"], s["succeeded"], s["failed"], s["retried"] + s["released"])
        if written != answered or s["lost"] or s["abandoned"]:
            mismatched.append({"worker": token, "table": written, "response": answered, "lost": s["lost"],
                               "abandoned": s["abandoned"]})
    if mismatched:
        failures["responses_vs_table"] = mismatched[:10]
    answered_tokens = {s["worker"] for s in summaries}
    with engine.connect() as conn:
        completed = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'completed'")).scalar_one()
    by_killed_calls = sum(n for (token, status), n in outcomes.items()
                          if status == "completed" and token not in answered_tokens)
    if completed != sum(s["succeeded"] for s in summaries) + by_killed_calls:
        failures["completed_total"] = [completed, sum(s["succeeded"] for s in summaries), by_killed_calls]
    return failures


if __name__ == "__main__":
    sys.exit(main())
