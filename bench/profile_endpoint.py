"""Where a /process-pending drain spends its time: py-spy over the gunicorn workers while callers drain N jobs.

    DATABASE_URL=... .venv/bin/python bench/profile_endpoint.py --py-spy /path/to/py-spy --gil \
        --workers 1 --threads 1 --callers 1 --concurrency 8 --jobs 60000

py-spy is not a project dependency (pip install py-spy anywhere, e.g. a throw-away venv). It samples the workers'
non-idle threads (with --gil: only the thread holding the GIL, i.e. the Python CPU work), and this prints the
functions with the most samples, inclusive and self. The raw stacks stay in bench/.out/. Uses the same server,
table filling and drain as bench/drain.py.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drain import OUT_DIR, JobsTable, Server, libpq_url, warm_up


def frames(stack: str) -> list[str]:
    """Collapsed py-spy stack 'process;thread;f1 (file:line);f2 ...' -> ['f1 (file)', ...] without line numbers."""
    out = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        where = where.rstrip(")").rsplit(":", 1)[0]
        out.append(f"{name} ({where.split('site-packages/')[-1].split('/wt-bench/')[-1]})" if where else name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (CPU work)")
    args = parser.parse_args()

    database_url = os.environ["DATABASE_URL"]
    jobs = JobsTable(libpq_url(database_url))
    raw = OUT_DIR / f"pyspy-{args.workers}x{args.threads}-c{args.concurrency}{'-gil' if args.gil else ''}.txt"
    with Server(database_url, args.workers, args.threads, args.concurrency) as server:
        warm_up(server, jobs, args.callers)
        jobs.fill(args.jobs)
        command = [args.py_spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--rate", str(args.rate),
                   "--format", "raw", "--output", str(raw), "--nonblocking"] + (["--gil"] if args.gil else [])
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        seconds, calls, succeeded = server.drain(args.callers, args.limit)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')}")
    print(f"{server.label}, {args.callers} callers: {succeeded:,} jobs in {seconds:.2f}s = "
          f"{succeeded / seconds:,.0f} jobs/s over {calls} calls")

    inclusive: Counter = Counter()
    self_time: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        stack_frames = frames(stack)
        if "gunicorn: master" in stack_frames[0] or "arbiter" in stack:
            continue
        total += n
        for frame in set(stack_frames[2:]):
            inclusive[frame] += n
        self_time[stack_frames[-1]] += n
    sampled = "the GIL holder" if args.gil else "non-idle threads"
    print(f"\n{total} samples in the workers ({args.rate}/s; {sampled})\n\ninclusive:")
    for frame, n in inclusive.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")
    print("\nself:")
    for frame, n in self_time.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")
    print(f"\nraw stacks: {raw}")
    jobs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
