"""Drain throughput of two versions of the endpoint side by side (issue 10: "no lower than today").

    git worktree add /tmp/before <commit>            # the version to compare with (its code only; this venv)
    make bench  # once, for the database (or set DATABASE_URL), then:
    .venv/bin/python bench/drain_versions.py --before /tmp/before --rounds 5

Both versions serve the same database in turns (interleaved rounds, so both see the same minutes of a shared
machine): N demo.noop jobs, gunicorn 2 workers x 4 threads, 4 callers POSTing /process-pending until a call claims
nothing, as bench/drain.py's "endpoint default" does. The schema is this checkout's (migrations); an older
version's statements run on it unchanged (its columns are a subset). The after side is measured twice: with the
request the before side gets (`limit=1000`) and with no parameters (what a cron sends), and once more with
`limit=1000` and JOBS_IDLE_GRACE_S=0 (`--no-no-grace-side` leaves it out): a call whose queue ran dry waits the idle
grace (5 s by default) for new work before it answers, so the drain's last answers come that much after its last
job is done. Both rates are printed: to the last answer, and to the last job's completion (completed_at, the
server's clock); beside them the CPU per job of the gunicorn workers and of the database server's processes during
the drain (bench/drain.py CPUMeter).

When the versions differ in a function the claim calls, name its file for each side: `--before-sql
sql/029_fair_claim_v5.sql --after-sql sql/029_fair_claim_v6.sql` runs the before checkout's file before each of its
rounds and this checkout's before each of the after side's (files are CREATE OR REPLACE: idempotent).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.drain import CPUMeter, JobsTable, Server, endpoint_drain, libpq_url, load, warm_up  # noqa: E402
from bench.drain_fifo import fill  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path, help="a checkout of the version to compare with")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stores", type=int, default=1, help="the jobs spread over this many stores (1: no store)")
    parser.add_argument("--before-sql", nargs="*", default=[],
                        help="files of the before checkout run before its rounds")
    parser.add_argument("--after-sql", nargs="*", default=[], help="files of this checkout run before its rounds")
    parser.add_argument("--no-grace-side", action=argparse.BooleanOptionalAction, default=True,
                        help="also the after side with JOBS_IDLE_GRACE_S=0 (limit=1000)")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    jobs = JobsTable(libpq_url(url))
    # the after side's calls that run dry wait JOBS_IDLE_GRACE_S (5 s) for new work before they answer; the last
    # side shows the same code without that wait
    sides = [("before, limit=1000", args.before.resolve(), 1000, {}), ("after, limit=1000", ROOT, 1000, {}),
             ("after, no parameters", ROOT, None, {}),
             ("after, limit=1000, grace 0", ROOT, 1000, {"JOBS_IDLE_GRACE_S": "0"})]
    if args.no_grace_side is False:
        sides = sides[:3]
    rates: dict[str, list[float]] = {label: [] for label, *_ in sides}
    done: dict[str, list[float]] = {label: [] for label, *_ in sides}
    app_us: dict[str, list[float]] = {label: [] for label, *_ in sides}
    server_us: dict[str, list[float]] = {label: [] for label, *_ in sides}
    meter = CPUMeter(jobs.conn)
    print(f"{args.jobs:,} demo.noop jobs, {args.stores} store(s), gunicorn 2x4, 4 callers, "
          f"JOBS_CONCURRENCY={args.concurrency}; {args.rounds} interleaved rounds; {load()}", flush=True)
    for round_no in range(1, args.rounds + 1):
        for label, root, limit, env in sides:
            for name in args.before_sql if root != ROOT else args.after_sql:
                with jobs.conn.cursor() as cur:
                    cur.execute((root / name).read_text())
            with Server(url, 2, 4, args.concurrency, root=root, env=env) as server:
                warm_up(server, jobs, 4)
                fill(jobs, args.jobs, args.stores)
                server_before, app_before = meter.read(server.proc.pid)
                result = endpoint_drain(server, jobs, args.jobs, 4, limit, fill=False)
                server_after, app_after = meter.read(server.proc.pid)
            rates[label].append(result.jobs_per_s)
            done[label].append(result.done_per_s)
            app_us[label].append(1e6 * (app_after - app_before) / args.jobs)
            server_us[label].append(1e6 * (server_after - server_before) / args.jobs)
            print(f"  round {round_no}: {label:<27} {result.jobs_per_s:>9,.0f} jobs/s  ({result.calls} calls; "
                  f"{result.done_per_s:,.0f} jobs/s to the last completion; gunicorn {app_us[label][-1]:.1f}, "
                  f"server {server_us[label][-1]:.1f} us CPU/job)  {load()}", flush=True)
    print("medians (to the last answer; to the last completion):")
    base = statistics.median(rates[sides[0][0]])
    base_done = statistics.median(done[sides[0][0]])
    for label, *_ in sides:
        median, median_done = statistics.median(rates[label]), statistics.median(done[label])
        print(f"  {label:<27} {median:>9,.0f} jobs/s  = {median / base:.2f}x before;  {median_done:>9,.0f} jobs/s "
              f"= {median_done / base_done:.2f}x;  CPU/job gunicorn {statistics.median(app_us[label]):.1f} us, "
              f"server {statistics.median(server_us[label]):.1f} us", flush=True)
    jobs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
