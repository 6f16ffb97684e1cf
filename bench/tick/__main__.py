"""Ticks under a real cron (issue 10): how much of its budget one /process-pending call uses, measured the way a
user lives with it. Each subcommand starts its own gunicorn (wsgi:app, gunicorn.conf.py) on loopback against a
fresh schema in the embedded PostgreSQL (database jobprocessor_bench_tick; DATABASE_URL wins), prints a summary
and writes bench/results/tick_<subcommand>_<tag>.json.

    .venv/bin/python -m bench.tick utilisation              # one call, budget_s=20, 2,000 x 0.2 s jobs (~1 min)
    .venv/bin/python -m bench.tick cadence                  # README cron, product.optimize, fake OpenAI (~6 min)
    .venv/bin/python -m bench.tick headline --scale 5       # 5,000 rewrites, 100 stores, 450/min (k=5: ~3-5 min)
    .venv/bin/python -m bench.tick pickup                   # enqueue -> start while a call is busy (~7 min)
    .venv/bin/python -m bench.tick SUBCOMMAND --help

The drain figure (no-op throughput, issue 2) is bench/drain.py (`make bench`); docs/BENCHMARKS.md gives the
command this issue compares.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from . import openai_runs, pickup, utilisation


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="case", required=True)
    cases = {
        "utilisation": (utilisation.add_arguments, "one call with a budget: threads' time busy"),
        "cadence": (openai_runs.add_cadence_arguments, "a once-a-minute cron on a product.optimize backlog"),
        "headline": (openai_runs.add_headline_arguments, "5,000 rewrites from 100 stores at 450/min"),
        "pickup": (pickup.add_arguments, "enqueue -> handler start while a call is busy"),
    }
    for name, (add, help_text) in cases.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, WEB_CONCURRENCY's)")
        p.add_argument("--threads", type=int, default=4, help="gunicorn threads (default 4, GUNICORN_THREADS's)")
        p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="an extra setting for the server (repeatable), e.g. --env JOBS_CONCURRENCY=16")
        p.add_argument("--tag", default="run", help="results file suffix, e.g. before / after (default run)")
    args = parser.parse_args(argv)
    command = "python -m bench.tick " + " ".join(shlex.quote(a) for a in argv)
    if args.case == "utilisation":
        return utilisation.run(args, command)
    if args.case == "pickup":
        return pickup.run(args, command)
    return openai_runs.run(args, command, args.case)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
