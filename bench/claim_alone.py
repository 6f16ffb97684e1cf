"""One claim of the drain alone (issue 11): the server's time for the claim statement of 1,000 jobs from a queue of
20,000 no-op jobs (1 store, or S stores round-robin), beside the same statement with FIFO's `due` step, the plain
loop's claim (bench/drain_fifo.py) and, installed beside the live function under another name, an older
jobs_fair_claim() from its sql/ file (`--older sql/033_fair_claim_v8.sql`).

    DATABASE_URL=... .venv/bin/python bench/claim_alone.py --stores 1,100 --reps 15 [--older sql/033_fair_claim_v8.sql]

Each claim runs under EXPLAIN (ANALYZE, TIMING OFF) in a transaction that is rolled back, so every one sees the
same queue; the variants take turns, and the table is vacuumed every 5 turns (a rolled-back claim leaves dead
index entries that later claims step over). One connection, nothing else running on it: the execution time is
the backend's CPU, near enough. Medians and minima, ms per claim. The end-to-end figures stay
bench/drain_fifo.py and bench/drain_versions.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.drain import JobsTable, libpq_url  # noqa: E402
from bench.drain_fifo import PLAIN_CLAIM, fill  # noqa: E402
from bench.fair_claim import claim_through, install_older_claim  # noqa: E402
from bench.fifo_claim import FIFO_CLAIM  # noqa: E402
from jobprocessor import queries  # noqa: E402
from jobprocessor.config import normalise_database_url  # noqa: E402

CLAIM_PARAMS = dict(limit=1000, worker="bench-claim-alone", lease_s=300.0, job_types=None, rescue_limit=1000,
                    max_per_store=None, start_types="{demo.noop}")


def execution_ms(engine, statement: str, params: dict) -> float:
    with engine.connect() as conn:
        rows = conn.execute(text("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + statement), params).fetchall()
        conn.rollback()
    return float(next(r[0] for r in rows if r[0].startswith("Execution Time")).split()[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="1,100", help="store counts, comma-separated")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--older", help="an older sql/ file whose jobs_fair_claim() runs beside the live one")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    engine = create_engine(normalise_database_url(url))
    jobs = JobsTable(libpq_url(url))
    variants = {"claim (live)": (queries.CLAIM, CLAIM_PARAMS)}
    if args.older:
        install_older_claim(engine, Path(args.older).name, "bench_claim_alone_older")  # a file of sql/
        older = claim_through("bench_claim_alone_older")
        variants[f"claim ({Path(args.older).stem})"] = (older, CLAIM_PARAMS)
    variants["claim, FIFO due step"] = (FIFO_CLAIM, CLAIM_PARAMS)
    variants["plain loop's claim"] = (PLAIN_CLAIM.replace("%(worker)s", "'bench-plain'"), {})
    for stores in [int(s) for s in args.stores.split(",")]:
        fill(jobs, args.jobs, stores)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for rep in range(args.reps):
            for name, (statement, params) in variants.items():
                times[name].append(execution_ms(engine, statement, params))
            if rep % 5 == 4:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM jobs"))
        print(f"{stores} store(s), {args.jobs:,} pending jobs, a claim of 1,000, {args.reps} turns:")
        for name, found in times.items():
            print(f"  {name:<32} median {statistics.median(found):6.2f} ms   min {min(found):6.2f} ms")
    jobs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
