"""The fair claim from a test: one claim in its own transaction, and the queue and store turns as the pure rule
(jobprocessor/policies/fairness.py) takes them."""
from __future__ import annotations

from sqlalchemy import text

from jobprocessor import queries
from jobprocessor.policies.fairness import DueJob, Turn, store_key

WORKER = "test-worker"


def queue_state(engine):
    """The due jobs (every type) and the store turns, as the pure rule takes them."""
    with engine.connect() as conn:
        due = [DueJob(r.id, r.priority, store_key(r.store_id), r.run_at, r.type) for r in conn.execute(text(
            "SELECT id, priority, store_id, run_at, type FROM jobs WHERE status = 'pending' AND run_at <= now()"))]
    return due, read_turns(engine)


def read_turns(engine) -> dict:
    """Each store's turn, as the directory of store queues holds it (the same on every row of the store)."""
    with engine.connect() as conn:
        return {r.store_key: Turn(r.served_at, r.served_pos) for r in conn.execute(text(
            "SELECT DISTINCT ON (store_key) store_key, served_at, served_pos FROM job_store_queues "
            "WHERE served_at > '-infinity' ORDER BY store_key, served_at DESC"))}


def claim_once(engine, limit, **kwargs):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '5s'"))  # a claim never waits on another: fail, do not hang
        now = conn.execute(text("SELECT now()")).scalar()  # the claim's now(): same transaction
        result = queries.claim(conn, limit=limit, worker=WORKER, lease_s=300, **kwargs)
    return now, result
