"""Separate OS processes for the workflow concurrency tests (tests/workflows/test_concurrency.py).

finisher():  claims parents (type test.echo) with its own lease token, then, at a barrier shared with the other
             finishers, finishes them all at the same moment (completed, or failed for the ids it is told), round after
             round: concurrent finishes of siblings that share children.
watcher():   claims released children (type wf.stage) as they come, and checks in the claim's own transaction that
             every parent of each has completed (or ended, for on_parent_failure "run"): a child never starts before
             its parents. Completes them, so grandchildren come too.
enqueuer():  enqueues the same singleton or debounce keys as the others, at a barrier.
ticker():    one /process-pending call's work (process_pending) in a process of its own, for a test to SIGKILL.

They start from a fork server that has loaded their modules once (forkserver()): eight processes start in well
under a second, where spawn would import everything eight times over.
"""
from __future__ import annotations

import multiprocessing
import os

from sqlalchemy import create_engine, text

PRELOAD = ["tests.support.workflow_workers", "jobprocessor.queries", "jobprocessor.enqueue",
           "jobprocessor.workflows.write",
           "jobprocessor.processor", "jobprocessor.handlers.product_optimize", "tests.support.job_handlers",
           "tests.support.settings"]


def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # read when the server starts (the first process started)
    return ctx


def _engine(database_url: str):
    from jobprocessor.config import normalise_database_url

    return create_engine(normalise_database_url(database_url), pool_size=2)


def finisher(database_url: str, rounds: int, per_round: int, fail_ids, barrier, results) -> None:
    from jobprocessor import queries
    from jobprocessor.queries import Outcome

    engine = _engine(database_url)
    token = f"finisher-{os.getpid()}"
    finished, errors = 0, []
    try:
        for _ in range(rounds):
            with engine.begin() as conn:
                rows = queries.claim(conn, limit=per_round, worker=token, lease_s=300, job_types=["test.echo"]).jobs
                queries.start(conn, token, [r["id"] for r in rows])
            barrier.wait(60)
            outcomes = [Outcome(r["id"], "failed", error="failed on purpose") if r["id"] in fail_ids
                        else Outcome(r["id"], "completed", result_json="{}") for r in rows]
            try:
                with engine.begin() as conn:
                    finished += len(queries.finish(conn, token, outcomes))
            except Exception as exc:  # noqa: BLE001 - a deadlock here is what the test looks for
                cause = getattr(exc, "orig", exc)
                errors.append(f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
            barrier.wait(60)
    finally:
        engine.dispose()
    results.put(("finisher", finished, errors))


# Parents of the claimed children that had not ended as their policy requires, seen in the claim's transaction.
EARLY = """
SELECT d.child_id, d.parent_id, p.status, c.on_parent_failure
FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id JOIN jobs c ON c.id = d.child_id
WHERE d.child_id = ANY(:ids)
  AND (p.status <> 'completed' AND (c.on_parent_failure = 'cancel' OR p.status NOT IN ('failed', 'cancelled')))
"""


def watcher(database_url: str, stop, results) -> None:
    from jobprocessor import queries
    from jobprocessor.queries import Outcome

    engine = _engine(database_url)
    token = f"watcher-{os.getpid()}"
    claimed, early = [], []
    idle_after_stop = 0
    try:
        while idle_after_stop < 3:
            with engine.begin() as conn:
                rows = queries.claim(conn, limit=500, worker=token, lease_s=300, job_types=["wf.stage"]).jobs
                ids = [r["id"] for r in rows]
                if ids:
                    early += [tuple(row) for row in conn.execute(text(EARLY), {"ids": ids})]
                    queries.start(conn, token, ids)
            if ids:
                with engine.begin() as conn:
                    queries.finish(conn, token, [Outcome(i, "completed", result_json="{}") for i in ids])
                claimed += ids
            elif stop.is_set():
                idle_after_stop += 1
            else:
                stop.wait(0.02)
    finally:
        engine.dispose()
    results.put(("watcher", claimed, early))


def enqueuer(database_url: str, secret: str, jobs: list, rounds: int, barrier, results, shuffle: bool) -> None:
    """Enqueues `jobs` (in an order of its own when `shuffle`) once per round, as POST /jobs does (validation, then
    one transaction retried after a deadlock); returns per round the ids, created flags and debounced positions, in
    the order of `jobs`."""
    import random

    from jobprocessor.enqueue import validate_jobs, write
    from jobprocessor.workflows.write import with_retry
    from tests.support import workflow_handlers  # noqa: F401 - the types enqueued
    from tests.support.settings import make_settings

    settings = make_settings(database_url, CRON_SECRET=secret)
    engine = _engine(database_url)
    order = list(range(len(jobs)))
    out = []
    try:
        for _ in range(rounds):
            if shuffle:
                random.Random(os.getpid()).shuffle(order)
            rows = validate_jobs([jobs[i] for i in order], settings)
            barrier.wait(60)
            written = with_retry(engine, lambda conn: write(conn, rows))
            ids, created = [None] * len(jobs), [None] * len(jobs)
            for position, i in enumerate(order):
                ids[i], created[i] = written.jobs[position]
            out.append((ids, created, sorted(order[p] for p in written.debounced)))
    finally:
        engine.dispose()
    results.put(("enqueuer", out, None))


def ticker(database_url: str, secret: str, budget_s: float) -> None:
    from jobprocessor import create_app
    from jobprocessor.extensions import db
    from jobprocessor.processor import process_pending
    from tests.support.settings import make_settings

    settings = make_settings(database_url, CRON_SECRET=secret)
    app = create_app(settings)
    with app.app_context():
        process_pending(db.engine, settings, limit=10, budget_s=budget_s, app=app)
