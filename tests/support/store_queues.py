"""The directory of store queues (sql/025) from a test: a store's row, claims and finishes through the real
statements, and the jobs the directory does not cover."""
from __future__ import annotations

from sqlalchemy import text

from jobprocessor import queries

WORKER = "test-worker"


def uncovered(engine) -> list:
    """(priority, store, type) of pending jobs that neither their row covers (head_lb and the type's head at or
    before the job; types not known: head_lb only) nor an arrival not merged yet (its type, or a type not known, at
    or before the job); and rows whose types are malformed (not sorted and distinct, not one head per type, a head
    below head_lb)."""
    with engine.connect() as conn:
        lost = conn.execute(text("""
            SELECT p.priority, p.store_key, p.type, p.first_run_at, q.head_lb, q.types, q.type_heads
            FROM (SELECT priority, coalesce(store_id, '') AS store_key, type, min(run_at) AS first_run_at
                  FROM jobs WHERE status = 'pending' GROUP BY 1, 2, 3) p
            LEFT JOIN job_store_queues q ON q.priority = p.priority AND q.store_key = p.store_key
            WHERE NOT coalesce(job_store_queues_covers(q.head_lb, q.types, q.type_heads, p.type, p.first_run_at),
                               false)
              AND NOT EXISTS (SELECT 1 FROM job_store_arrivals a
                              WHERE a.priority = p.priority AND a.store_key = p.store_key
                                AND (a.type IS NULL OR a.type = p.type) AND a.run_at <= p.first_run_at)""")).all()
        malformed = conn.execute(text("""
            SELECT store_key, priority, types, type_heads, head_lb FROM job_store_queues
            WHERE (types IS NULL) <> (type_heads IS NULL)
               OR cardinality(types) <> cardinality(type_heads)
               OR types <> ARRAY(SELECT DISTINCT t FROM unnest(types) AS t ORDER BY t)
               OR EXISTS (SELECT 1 FROM unnest(type_heads) AS h WHERE h < head_lb)""")).all()
    return lost + malformed


def row(engine, store, priority=5):
    with engine.connect() as conn:
        return conn.execute(text("SELECT CASE WHEN head_lb < 'infinity' THEN head_lb END AS head_lb, "
                                 "head_lb = 'infinity' AS empty, served_at FROM job_store_queues "
                                 "WHERE priority = :p AND store_key = :s"), {"p": priority, "s": store}).first()


def claim(engine, limit, **kwargs):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '5s'"))  # a claim never waits on an enqueue: fail, not hang
        return queries.claim(conn, limit=limit, worker=WORKER, lease_s=300, **kwargs).jobs


def finish(engine, outcomes):
    with engine.begin() as conn:
        return queries.finish(conn, WORKER, outcomes)
