"""The directory of store queues (sql/023) against real PostgreSQL: every way a job becomes pending keeps its store's
row covering it; the claim tightens rows of stores with nothing due, never while an enqueue of that store is in
flight; and enqueues racing claims over many connections lose no job."""
from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import text

from jobprocessor import queries
from jobprocessor.queries import Outcome
from tests.conftest import insert_jobs

WORKER = "test-worker"


def uncovered(engine) -> list:
    """(priority, store) pairs with a pending job that no row covers (missing, or head_lb after the job)."""
    with engine.connect() as conn:
        return conn.execute(text("""
            SELECT p.priority, p.store_key, p.first_run_at, q.head_lb
            FROM (SELECT priority, coalesce(store_id, '') AS store_key, min(run_at) AS first_run_at
                  FROM jobs WHERE status = 'pending' GROUP BY 1, 2) p
            LEFT JOIN job_store_queues q ON q.priority = p.priority AND q.store_key = p.store_key
            WHERE q.head_lb IS NULL OR q.head_lb > p.first_run_at""")).all()


def turns_split(engine) -> list:
    """Stores whose rows disagree on the store's turn (with one caller at a time, a claim writes all of them)."""
    with engine.connect() as conn:
        return conn.execute(text("""
            SELECT store_key FROM job_store_queues GROUP BY store_key
            HAVING count(DISTINCT (served_at, served_pos)) > 1""")).all()


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


def test_every_way_to_pending_keeps_the_store_covered(clean_db):
    engine = clean_db
    # enqueue: one statement, several stores and levels, a past run_at, a future one, no store
    insert_jobs(engine, 12, store_id="'s' || (g % 3)", priority="1 + (g % 2) * 4",
                run_at="now() - make_interval(mins => g)")
    insert_jobs(engine, 2, run_at="now() + interval '1 hour'")
    assert uncovered(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_store_queues")).scalar() == 7  # 3 stores x 2 levels + ''

    claimed = claim(engine, 12)
    assert len(claimed) == 12 and uncovered(engine) == [] and turns_split(engine) == []
    ids = [r["id"] for r in claimed]
    # a retry (later), a release (keeps its old run_at), a failure and a completion
    finish(engine, [Outcome(ids[0], "pending", delay_s=30.0), Outcome(ids[1], "pending", delay_s=None,
                                                                       give_back_attempt=True),
                    Outcome(ids[2], "failed", error="x"), Outcome(ids[3], "completed", result_json="{}")])
    assert uncovered(engine) == []
    # an expired lease: the claim's own rescue makes the job pending again, with its old run_at
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = :id"),
                     {"id": ids[4]})
    claim(engine, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": ids[4]}).scalar() == "pending"
    assert uncovered(engine) == []
    # a manual retry of the failed job (due now), a job moved earlier, to another store, to another level
    with engine.begin() as conn:
        queries.retry_job(conn, ids[2])
        conn.execute(text("UPDATE jobs SET run_at = now() - interval '1 day' WHERE status = 'pending' "
                          "AND store_id IS NULL"))
        conn.execute(text("UPDATE jobs SET store_id = 'moved' WHERE id = (SELECT min(id) FROM jobs "
                          "WHERE status = 'pending' AND store_id IS NOT NULL)"))
        conn.execute(text("UPDATE jobs SET priority = 1 WHERE id = (SELECT max(id) FROM jobs "
                          "WHERE status = 'pending' AND store_id IS NOT NULL)"))
    assert uncovered(engine) == []
    # and whatever is pending is claimable by the fair claim
    while claim(engine, 5):
        pass
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending' AND run_at <= now()")
                            ).scalar() == 0


def test_stores_with_nothing_due_drop_out_and_come_back(clean_db):
    engine = clean_db
    insert_jobs(engine, 1, store_id="'drained'")
    insert_jobs(engine, 1, store_id="'later'", run_at="now() - interval '1 minute'")
    insert_jobs(engine, 2, store_id="'busy'")
    assert {r["store_id"] for r in claim(engine, 3)} == {"drained", "later", "busy"}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', 'later', "
                          "now() + interval '1 hour')"))
    # the next claim reads the rows of 'drained' and 'later' (served just before, so they rank last), finds
    # nothing due there, and tightens them: no pending job / the next one in an hour
    assert [r["store_id"] for r in claim(engine, 5)] == ["busy"]
    assert row(engine, "drained").empty
    with engine.connect() as conn:
        later_run_at = conn.execute(text("SELECT run_at FROM jobs WHERE store_id = 'later' AND status = "
                                         "'pending'")).scalar()
    assert row(engine, "later").head_lb == later_run_at
    # the next enqueue of the drained store lowers its row again, and the claim finds it
    insert_jobs(engine, 1, store_id="'drained'")
    assert row(engine, "drained").head_lb <= later_run_at
    assert [r["store_id"] for r in claim(engine, 5)] == ["drained"]


# How the job becomes pending in the transaction left open: an enqueue whose row already covers it (the enqueue only
# holds the row, FOR KEY SHARE), an enqueue that lowers the row (and holds it by that update), and a manual retry of
# a failed job (the UPDATE trigger's path).
BECOME_PENDING = {
    "covered": "INSERT INTO jobs (type, store_id) VALUES ('test.echo', 'a') RETURNING id",
    "lowered": "INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', 'a', now() - interval '1 hour') "
               "RETURNING id",
    "retried": "UPDATE jobs SET status = 'pending', attempts = 0, completed_at = NULL WHERE store_id = 'a' "
               "AND status = 'failed' RETURNING id",
}


@pytest.mark.parametrize("how", list(BECOME_PENDING))
def test_a_job_becoming_pending_in_flight_keeps_its_row_from_being_tightened(clean_db, how):
    """The race the row lock closes: a store with a stale row gets a pending job in a transaction not yet committed,
    while a claim finds the store with nothing due. The claim must leave the row alone, or the job, once committed,
    would sit behind head_lb = 'infinity' where no claim looks."""
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    insert_jobs(engine, 1, store_id="'b'", run_at="now() - interval '1 minute'")
    claimed = claim(engine, 2)  # both stores served: their rows now look due but have nothing
    finish(engine, [Outcome(r["id"], "failed", error="x") for r in claimed])
    insert_jobs(engine, 1, store_id="'c'")  # something due, so the next claim reads the level's rows
    with engine.connect() as enqueuer:
        tx = enqueuer.begin()
        new_id = enqueuer.execute(text(BECOME_PENDING[how])).scalar()
        # the job is not committed: the claim finds only 'c' due, and tightens 'b'...
        assert [r["store_id"] for r in claim(engine, 5)] == ["c"]
        assert row(engine, "b").empty
        assert not row(engine, "a").empty  # ...but not 'a', held by the transaction
        tx.commit()
    assert [r["id"] for r in claim(engine, 5)] == [new_id]


def test_a_claim_tightening_a_row_makes_a_concurrent_enqueue_wait_then_lower_it(clean_db, raw_engine):
    """The other order: the claim holds the row (FOR UPDATE, until it commits) when the enqueue comes; the enqueue
    waits for it, then sees the raised row and lowers it again."""
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    assert len(claim(engine, 1)) == 1
    insert_jobs(engine, 1, store_id="'c'")  # something due, so the claim reads the level's rows
    done = threading.Event()
    errors = []

    def enqueue():
        try:
            with raw_engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '20s'"))
                conn.execute(text("INSERT INTO jobs (type, store_id) VALUES ('test.echo', 'a')"))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    with engine.connect() as claimer:
        tx = claimer.begin()
        claimer.execute(text("SELECT * FROM jobs_fair_claim(5)")).all()  # tightens 'a' to infinity, holds the row
        thread = threading.Thread(target=enqueue)
        thread.start()
        assert not done.wait(1.0), "the enqueue should wait for the claim holding the row"
        tx.commit()
    thread.join(20)
    assert done.is_set() and errors == []
    assert uncovered(engine) == []
    assert sorted(r["store_id"] for r in claim(engine, 5)) == ["a", "c"]


def test_enqueues_racing_claims_lose_no_job(clean_db, raw_engine):
    """4 enqueuers (one job per transaction, some holding the transaction open a moment) into 20 stores that keep
    running dry, against 3 claimers that claim and complete: every job is claimed exactly once, and once the
    enqueuers stop, the claims drain the queue to nothing."""
    engine = clean_db
    stop = threading.Event()
    enqueued, claimed, errors = [], [], []
    lock = threading.Lock()

    def enqueuer(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                with raw_engine.begin() as conn:
                    job_id = conn.execute(text(
                        "INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', :s, now() - "
                        "make_interval(secs => :back)) RETURNING id"),
                        {"s": f"s{rnd.randrange(20)}", "back": rnd.choice([0, 0, 5, 60])}).scalar()
                    if rnd.random() < 0.3:
                        time.sleep(rnd.uniform(0.001, 0.02))  # commit a little later: claims run meanwhile
                with lock:
                    enqueued.append(job_id)
                time.sleep(rnd.uniform(0, 0.005))
        except Exception as exc:
            errors.append(exc)

    def claimer():
        try:
            while not stop.is_set():
                rows = claim(engine, 3)
                finish(engine, [Outcome(r["id"], "completed", result_json="{}") for r in rows])
                with lock:
                    claimed.extend(r["id"] for r in rows)
                if not rows:
                    time.sleep(0.002)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueuer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=claimer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert uncovered(engine) == []
    idle = 0
    while idle < 2:
        rows = claim(engine, 50)
        claimed.extend(r["id"] for r in rows)
        idle = idle + 1 if not rows else 0
    assert len(enqueued) > 100
    assert sorted(claimed) == sorted(enqueued)  # each exactly once, none left behind


def test_the_claim_reads_about_as_many_stores_as_it_has_slots(clean_db):
    """1,000 stores waiting, a claim of 10: the claim reads the directory in wait order and stops early. Counted
    through pg_stat (index tuples fetched from the directory's wait index), not timed."""
    engine = clean_db
    insert_jobs(engine, 2000, store_id="'s' || (g % 1000)", run_at="now() - make_interval(secs => g)")
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        before = conn.execute(text("SELECT coalesce(idx_tup_read, 0) FROM pg_stat_user_indexes "
                                   "WHERE indexrelname = 'job_store_queues_wait_idx'")).scalar()
        rows = conn.execute(text("SELECT * FROM jobs_fair_claim(10)")).all()
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        after = conn.execute(text("SELECT coalesce(idx_tup_read, 0) FROM pg_stat_user_indexes "
                                  "WHERE indexrelname = 'job_store_queues_wait_idx'")).scalar()
    assert len(rows) == 10
    assert 10 < after - before <= 40, after - before
