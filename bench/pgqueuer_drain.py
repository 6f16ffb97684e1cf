"""pgqueuer draining N no-op jobs: the peer in bench/drain.py. Runs in bench/.venv-pgqueuer, not the project venv.

    python bench/pgqueuer_drain.py --dsn URL --jobs 20000 --batch-size 100 --consumers 2 --runs 3

Per run: empty pgqueuer's tables, enqueue N jobs of one no-op entrypoint in one statement (pgqueuer's own bulk
enqueue), ANALYZE, then time `consumers` QueueManagers, each on its own asyncpg connection under uvloop (the shape
of pgqueuer's own tools/benchmark.py drain strategy), in drain mode from the start of run() until every one has
returned, i.e. every completion is written (pgqueuer deletes a finished job and logs it in pgqueuer_log). Checks
that every job ran once and none is left. Prints one JSON line per run. The schema comes from `pgq install`
(scripts/bench.sh).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg
import uvloop
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench.noop"


async def one_run(dsn: str, jobs: int, batch_size: int, consumers: int, dequeue_timeout_s: float) -> dict:
    setup = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(setup))
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    await queries.enqueue([ENTRYPOINT] * jobs, [None] * jobs, [0] * jobs)
    await setup.execute("ANALYZE pgqueuer; ANALYZE pgqueuer_log")

    ran: dict[int, int] = {}
    managers = []
    for _ in range(consumers):
        pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(dsn)))

        @pgq.entrypoint(ENTRYPOINT)
        async def noop(job) -> None:  # the whole handler: count the execution
            ran[job.id] = ran.get(job.id, 0) + 1

        managers.append(pgq)

    started = time.perf_counter()
    await asyncio.gather(*(pgq.run(batch_size=batch_size, mode=QueueExecutionMode.drain,
                                   dequeue_timeout=timedelta(seconds=dequeue_timeout_s)) for pgq in managers))
    elapsed = time.perf_counter() - started

    left = await setup.fetchval("SELECT count(*) FROM pgqueuer")
    logged = await setup.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    await setup.close()
    problems = []
    if len(ran) != jobs or any(n != 1 for n in ran.values()):
        problems.append(f"{len(ran)} distinct jobs ran, {sum(ran.values())} executions (want {jobs} once each)")
    if left:
        problems.append(f"{left} jobs left in the queue")
    if logged != jobs:
        problems.append(f"{logged} successful completions logged (want {jobs})")
    return {"contender": "pgqueuer", "jobs": jobs, "batch_size": batch_size, "consumers": consumers,
            "seconds": elapsed, "jobs_per_s": jobs / elapsed, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dequeue-timeout-s", type=float, default=30.0)
    args = parser.parse_args()
    for _ in range(args.runs):
        result = uvloop.run(one_run(args.dsn, args.jobs, args.batch_size, args.consumers, args.dequeue_timeout_s))
        print(json.dumps(result), flush=True)
        if result["problems"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
