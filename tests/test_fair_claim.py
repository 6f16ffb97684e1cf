"""The fair claim against real PostgreSQL: queries.claim() (jobs_fair_claim()) takes exactly the jobs the pure rule
(jobprocessor.policies.fairness) allocates for the same queue, in the same order, and keeps the store turns the rule
describes; the seed scenarios over successive calls; concurrent callers."""
from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobprocessor import create_app, queries
from jobprocessor.policies.fairness import allocate, next_turns, store_key
from tests.support.claims import WORKER, claim_once, queue_state, read_turns
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH, make_settings


def claim_and_check(engine, limit, **kwargs) -> list:
    """One claim, checked job for job (and turn for turn) against the pure rule on the same queue."""
    due, turns = queue_state(engine)
    now, result = claim_once(engine, limit, **kwargs)
    expected = allocate(due, limit, max_per_store=kwargs.get("max_per_store"), turns=turns,
                        types=kwargs.get("job_types"))
    assert [row["id"] for row in result.jobs] == [job.id for job in expected]
    assert [row["claim_order"] for row in result.jobs] == list(range(1, len(expected) + 1))
    assert read_turns(engine) == {**turns, **next_turns(expected, now)}
    return result.jobs


def stores_of(rows) -> Counter:
    return Counter(store_key(row["store_id"]) for row in rows)


def pending_per_store(engine) -> Counter:
    with engine.connect() as conn:
        return Counter({r[0]: r[1] for r in conn.execute(text(
            "SELECT coalesce(store_id, ''), count(*) FROM jobs WHERE status = 'pending' GROUP BY 1"))})


# (stores, jobs each) per enqueue; groups are enqueued one after the other, so the first group's jobs are older.
# Inside a group, each store's jobs are enqueued in one block (one run_at): the case where "oldest job first" alone
# would serve the same stores call after call.
SCENARIOS = {
    "2x2500": [(2, 2500)],
    "5x1000": [(5, 1000)],
    "10x500": [(10, 500)],
    "100x50": [(100, 50)],
    "1x5000+99x50": [(1, 5000), (99, 50)],
}


def seed(engine, groups) -> list[str]:
    stores = []
    for gi, (n_stores, per_store) in enumerate(groups):
        insert_jobs(engine, n_stores * per_store, store_id=f"'g{gi}-' || ((g - 1) / {per_store})")
        stores += [f"g{gi}-{k}" for k in range(n_stores)]
    return stores


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_seed_scenarios_every_store_served_every_call(clean_db, scenario):
    """limit 100 >= stores: the first call serves every store, and so does every call while a store has jobs;
    the first calls match the rule exactly; the queue drains completely, each job claimed once."""
    engine = clean_db
    stores = seed(engine, SCENARIOS[scenario])
    total = sum(n * per for n, per in SCENARIOS[scenario])
    claimed = []
    calls = 0
    while True:
        waiting = pending_per_store(engine)
        rows = claim_and_check(engine, 100) if calls < 3 else claim_once(engine, 100)[1].jobs
        if not rows:
            break
        calls += 1
        got = stores_of(rows)
        assert len(rows) == min(100, sum(waiting.values()))  # work-conserving
        assert set(got) == set(waiting)  # no store waits a call
        share = {s: min(n, 100 // len(waiting)) for s, n in waiting.items()}
        assert all(got[s] >= share[s] for s in waiting)  # at least the fair share
        if calls == 1:
            assert set(got) == set(stores)
        claimed += [row["id"] for row in rows]
    assert len(claimed) == len(set(claimed)) == total


@pytest.mark.parametrize("scenario,limit,rounds", [("100x50", 10, 2), ("1x5000+99x50", 10, 2),
                                                   ("2x2500", 11, 6), ("10x500", 7, 3), ("5x1000", 3, 4)])
def test_more_stores_than_slots_round_robin(clean_db, scenario, limit, rounds):
    """Fewer slots than stores (or a partial round): successive calls serve every store in turn -- after any
    number of calls, no store has been served more than once more than any other -- matching the rule each call."""
    engine = clean_db
    stores = seed(engine, SCENARIOS[scenario])
    served = Counter({s: 0 for s in stores})
    n_calls = rounds * -(-len(stores) // limit)
    for _ in range(n_calls):
        served.update(stores_of(claim_and_check(engine, limit)))
        assert max(served.values()) - min(served.values()) <= 1
    assert sum(served.values()) == n_calls * limit


def test_priority_is_global_and_the_cap_is_hard(clean_db):
    engine = clean_db
    insert_jobs(engine, 300, store_id="'big'")
    insert_jobs(engine, 5, store_id="'small'", priority="1")
    insert_jobs(engine, 20, priority="2")  # no store: a store of its own
    rows = claim_and_check(engine, 12)
    assert [row["priority"] for row in rows] == [1] * 5 + [2] * 7
    rows = claim_and_check(engine, 50, max_per_store=4)
    assert stores_of(rows) == {"": 4, "big": 4}
    assert [row["priority"] for row in rows] == [2] * 4 + [5] * 4
    rows = claim_and_check(engine, 50)
    assert stores_of(rows) == {"": 9, "big": 41}


def test_the_cap_counts_a_store_across_levels(clean_db):
    engine = clean_db
    insert_jobs(engine, 3, store_id="'a'", priority="1")
    insert_jobs(engine, 10, store_id="'a'")
    insert_jobs(engine, 10, store_id="'b'")
    rows = claim_and_check(engine, 20, max_per_store=5)
    assert Counter((row["store_id"], row["priority"]) for row in rows) == {("a", 1): 3, ("a", 5): 2, ("b", 5): 5}


def test_type_filter_and_future_jobs(clean_db):
    engine = clean_db
    insert_jobs(engine, 40, store_id="'a'")
    insert_jobs(engine, 10, job_type="test.sleep", store_id="'a'")
    insert_jobs(engine, 10, job_type="test.sleep", store_id="'b'")
    insert_jobs(engine, 10, job_type="test.sleep", store_id="'c'", run_at="now() + interval '1 hour'")
    rows = claim_and_check(engine, 8, job_types=["test.sleep"])
    assert {row["type"] for row in rows} == {"test.sleep"} and stores_of(rows) == {"a": 4, "b": 4}
    rows = claim_and_check(engine, 100)
    assert stores_of(rows) == {"a": 46, "b": 6}  # c's jobs are not due yet
    assert claim_and_check(engine, 100) == []


def test_a_claim_statement_of_the_previous_release_still_works(clean_db):
    """During a deploy, processes of the previous release call jobs_fair_claim(integer, text, integer, bigint[])
    (one type or none): it is a set of one type, or every type, and calls with fewer arguments are v3's."""
    engine = clean_db
    insert_jobs(engine, 3, store_id="'a'")
    insert_jobs(engine, 3, job_type="test.sleep", store_id="'a'")
    with engine.begin() as conn:
        old_typed = conn.execute(text("SELECT j.type FROM jobs_fair_claim(CAST(10 AS integer), CAST('test.sleep' AS "
                                      "text), CAST(NULL AS integer), '{}'::bigint[]) f JOIN jobs j ON j.id = f.job_id")
                                 ).scalars().all()
        old_all = conn.execute(text("SELECT count(*) FROM jobs_fair_claim(CAST(10 AS integer), CAST(NULL AS text), "
                                    "CAST(NULL AS integer), '{}'::bigint[])")).scalar()
        new_default = conn.execute(text("SELECT count(*) FROM jobs_fair_claim(10)")).scalar()
        conn.rollback()
    assert old_typed == ["test.sleep"] * 3 and old_all == 6 and new_default == 6


def test_nothing_due_is_one_cheap_statement_and_still_rescues(clean_db):
    engine = clean_db
    insert_jobs(engine, 5, store_id="'a'", run_at="now() + interval '1 hour'")
    insert_jobs(engine, 1, store_id="'b'", status="'running'", attempts="1", locked_by="'gone'",
                locked_until="now() - interval '1 minute'")
    now, result = claim_once(engine, 10)
    assert result.jobs == [] and result.rescued_pending == 1
    assert read_turns(engine) == {}  # nothing served, nothing written


def test_a_store_served_by_a_concurrent_claim_waits_its_turn(clean_db):
    """While one caller's claim is uncommitted (its rows locked), a second caller neither waits nor takes the
    same jobs, and it serves the stores nobody is serving before giving a store a second job."""
    engine = clean_db
    seed(engine, SCENARIOS["100x50"])
    with engine.connect() as first:
        tx = first.begin()
        held = queries.claim(first, limit=10, worker="first", lease_s=300).jobs
        _, second = claim_once(engine, 10)
        tx.rollback()
    assert not {row["id"] for row in held} & {row["id"] for row in second.jobs}
    assert len(second.jobs) == 10
    assert not set(stores_of(held)) & set(stores_of(second.jobs))


def test_callers_serving_the_same_new_store_do_not_wait_for_each_other(clean_db):
    """Both callers serve the one store, whose turn row the first is inserting (uncommitted): the second neither
    waits for it nor fails, and takes the next jobs."""
    engine = clean_db
    insert_jobs(engine, 50, store_id="'only'")
    with engine.connect() as first:
        tx = first.begin()
        held = queries.claim(first, limit=10, worker="first", lease_s=300).jobs
        _, second = claim_once(engine, 10)
        tx.commit()
    assert [row["id"] for row in held] == list(range(1, 11))
    assert [row["id"] for row in second.jobs] == list(range(11, 21))
    assert set(read_turns(engine)) == {"only"}


def test_four_concurrent_callers_claim_each_job_once(clean_db):
    engine = clean_db
    seed(engine, SCENARIOS["1x5000+99x50"])
    start = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]
    windows: list[tuple[float, float, int]] = []  # (start, end, caller) of each claim
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        try:
            start.wait()
            while True:
                began = time.monotonic()
                with engine.begin() as conn:
                    rows = queries.claim(conn, limit=100, worker=f"caller-{k}", lease_s=300).jobs
                windows.append((began, time.monotonic(), k))
                if not rows:
                    return
                claimed[k] += [row["id"] for row in rows]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    # the claims did run at the same time (else this would not test concurrency)
    windows.sort()
    assert any(b[0] < a[1] and b[2] != a[2] for a, b in zip(windows, windows[1:]))
    ids = [job_id for ids in claimed for job_id in ids]
    assert len(ids) == len(set(ids)) == 9950
    assert all(claimed)  # every caller got work
    jobs = fetch_jobs(engine)
    assert {(job["status"], job["attempts"]) for job in jobs} == {("running", 0)}  # leased: no run started yet
    assert {job["locked_by"] for job in jobs} == {f"caller-{k}" for k in range(4)}


QUEUED_TYPES = ["test.a", "test.b", "test.c"]
# the sets of types a claim may ask for: every type (None), one, some, all queued ones plus one never queued (what a
# process with more handlers than the queue has types passes), and none of the queued ones
TYPE_SETS = st.one_of(st.none(), st.lists(st.sampled_from(QUEUED_TYPES + ["test.z"]), max_size=4))


def test_processes_claiming_with_type_sets_take_each_job_once_and_only_their_types(database_url, clean_db):
    """4 OS processes claim concurrently (rounds of 20) from 40 stores holding 4 types, each process for its own
    set of types -- as processes with different handlers do -- and none for the fourth type: every job of a wanted
    type is claimed exactly once, by a process that asked for its type; the jobs of the fourth type stay pending."""
    engine = clean_db
    insert_jobs(engine, 3200, job_type="test.a", store_id="'s' || (g % 40)",
                run_at="now() - make_interval(secs => g % 600)")
    with engine.begin() as conn:  # the same jobs, four types at random
        conn.execute(text("UPDATE jobs SET type = (ARRAY['test.a', 'test.b', 'test.c', 'test.d'])"
                          "[1 + (hashint4(id::int) & 3)]"))
    sets = {"p-ab": ["test.a", "test.b"], "p-bc": ["test.b", "test.c"], "p-ac": ["test.a", "test.c", "test.z"],
            "p-abc": ["test.a", "test.b", "test.c"]}
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(sets)), ctx.Queue()
    from tests.support.typed_claim_worker import claim_until_idle

    procs = [ctx.Process(target=claim_until_idle, args=(database_url, name, types, start, results))
             for name, types in sets.items()]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert [r[3] for r in reports] == [None] * len(sets)
    claimed = {name: ids for name, ids, _, _ in reports}
    for name, ids in claimed.items():
        assert ids and {job_type for _, job_type in ids} <= set(sets[name]), name
    every = [job_id for ids in claimed.values() for job_id, _ in ids]
    assert len(every) == len(set(every))  # never twice
    with engine.connect() as conn:
        wanted = {r[0] for r in conn.execute(text("SELECT id FROM jobs WHERE type <> 'test.d'"))}
        left = dict(conn.execute(text("SELECT type, count(*) FROM jobs WHERE status = 'pending' GROUP BY type")).all())
    assert set(every) == wanted  # every job of a wanted type, once
    assert list(left) == ["test.d"]
    windows = sorted((began, ended, name) for name, _, spans, _ in reports for began, ended in spans)
    assert any(b[0] < a[1] and b[2] != a[2] for a, b in zip(windows, windows[1:]))  # the claims overlapped


@st.composite
def db_queues(draw):
    specs = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.sampled_from([1, 2, 5, 10]),
                                    st.integers(0, 8), st.sampled_from(QUEUED_TYPES)), min_size=0, max_size=40))
    turns = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d", ""]),
                                 st.tuples(st.integers(0, 12), st.integers(1, 40)), max_size=3))
    return (specs, turns, *draw(claims()))


@st.composite
def claims(draw):
    """Successive claims: their size, the per-store cap and the set of types of each."""
    limit, cap = draw(st.integers(1, 45)), draw(st.none() | st.integers(1, 6))
    return limit, cap, draw(st.lists(TYPE_SETS, min_size=1, max_size=3))


def load_queue(engine, specs) -> object:
    """An empty queue, then a job per (store, priority, seconds after the base time, type); returns the base time
    (an hour ago)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_store_arrivals RESTART IDENTITY"))
        base = conn.execute(text("SELECT now() - interval '1 hour'")).scalar()
        for store, priority, t, job_type in specs:
            conn.execute(text("INSERT INTO jobs (type, store_id, priority, run_at) VALUES (:type, :s, :p, :r)"),
                         {"type": job_type, "s": store, "p": priority, "r": base + timedelta(seconds=t)})
    return base


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=db_queues())
def test_sql_matches_the_rule_on_random_queues(raw_engine, case):
    """Random queues (several types, ties in run_at, several levels, no-store jobs, earlier turns, a cap) and
    successive claims each for a random set of types (every type, some, none of the queued ones, a superset):
    each call claims the jobs the rule allocates, in its order, and never a job of a type it did not ask for."""
    specs, turns, limit, cap, type_sets = case
    base = load_queue(raw_engine, specs)
    with raw_engine.begin() as conn:
        for store, (t, pos) in turns.items():  # earlier turns (a store without a pending job has no row: moot)
            conn.execute(text("UPDATE job_store_queues SET served_at = :at, served_pos = :pos WHERE store_key = :s"),
                         {"s": store, "at": base + timedelta(seconds=t), "pos": pos})
    for job_types in type_sets:
        rows = claim_and_check(raw_engine, limit, max_per_store=cap, job_types=job_types)
        assert job_types is None or {row["type"] for row in rows} <= set(job_types)


@st.composite
def one_store_queues(draw):
    """The queue of one store (jobprocessor's own single tenant: no store), the claim's shortcut
    (jobs_fair_claim_one_store(), sql/034): several levels and types, ties in run_at, jobs not due yet, a cap."""
    store = draw(st.sampled_from(["a", None]))
    specs = draw(st.lists(st.tuples(st.just(store), st.sampled_from([1, 2, 5, 10]),
                                    st.sampled_from([0, 1, 2, 3, 7200]), st.sampled_from(QUEUED_TYPES)),
                          min_size=1, max_size=40))
    return (specs, *draw(claims()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=one_store_queues())
def test_sql_matches_the_rule_on_random_queues_of_one_store(raw_engine, case):
    """Successive claims from one store's queue, each for a random set of types: job for job, and turn for turn,
    as the rule says; the second claim of each set meets jobs the first left (the cap, the limit)."""
    specs, limit, cap, type_sets = case
    load_queue(raw_engine, specs)
    for job_types in type_sets:
        for _ in range(2):
            rows = claim_and_check(raw_engine, limit, max_per_store=cap, job_types=job_types)
            assert job_types is None or {row["type"] for row in rows} <= set(job_types)


def test_the_one_store_shortcut_applies_only_when_nothing_else_could_change_the_claim(clean_db):
    """jobs_fair_claim_one_store() answers (FIFO, the cap, the rescued jobs left out) only when the directory knows
    one store, no arrival waits, nothing of flow control is set and every type of the store is wanted, or one of
    them only (read by type); otherwise it answers nothing and the whole claim runs."""
    engine = clean_db
    ids = insert_jobs(engine, 4, job_type="test.a", store_id="'s1'", run_at="now() - g * interval '1 second'")
    fifo = sorted(ids, reverse=True)  # the oldest first

    def shortcut(types=None, cap=None, skip=()):
        with engine.connect() as conn:
            found = [r[0] for r in conn.execute(text(
                "SELECT job_id FROM jobs_fair_claim_one_store(10, CAST(:types AS text[]), :cap, "
                "CAST(:skip AS bigint[])) ORDER BY claim_order"), {"types": types, "cap": cap, "skip": list(skip)})]
            conn.rollback()
        return found

    def sql(statement):
        with engine.begin() as conn:
            conn.execute(text(statement))

    assert shortcut() == fifo
    assert shortcut(cap=2) == fifo[:2]
    assert shortcut(skip=[fifo[0]]) == fifo[1:]
    assert shortcut(types=["test.a", "test.z"]) == fifo
    assert shortcut(types=["test.z"]) == []  # none of the store's types wanted
    b_ids = insert_jobs(engine, 2, job_type="test.b", store_id="'s1'", priority="2")
    c_ids = insert_jobs(engine, 1, job_type="test.c", store_id="'s1'")
    assert shortcut(types=["test.a", "test.z"]) == fifo  # one of its types wanted: read by type
    assert shortcut(types=["test.b"]) == b_ids
    assert shortcut(types=["test.a", "test.b"]) == []  # two of its three: the whole way
    assert shortcut() == b_ids + fifo + c_ids  # every type: priority first
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = ANY(:ids)"), {"ids": b_ids + c_ids})
    held = ("INSERT INTO job_store_quota_holds (store_key, type, until) "
            "VALUES ('s1', 'test.a', now() {} interval '1 minute')")
    for setup, undo in [
        ("INSERT INTO job_pauses (type) VALUES ('test.z')", "DELETE FROM job_pauses"),
        ("INSERT INTO job_pauses (store_id) VALUES ('s9')", "DELETE FROM job_pauses"),
        ("INSERT INTO job_store_limits (store_id, weight) VALUES ('s9', 2)", "DELETE FROM job_store_limits"),
        ("INSERT INTO job_store_limits (max_running) VALUES (5)", "DELETE FROM job_store_limits"),
        (held.format("+"), "DELETE FROM job_store_quota_holds"),
        ("INSERT INTO job_store_arrivals (store_key, priority, run_at, type) VALUES ('s9', 5, now(), 'test.a')",
         "DELETE FROM job_store_arrivals"),
    ]:
        sql(setup)
        assert shortcut() == [], setup
        sql(undo)
        assert shortcut() == fifo, undo
    sql(held.format("-"))  # a hold that has ended
    assert shortcut() == fifo
    insert_jobs(engine, 1, job_type="test.a", store_id="'s2'")  # a second store
    assert shortcut() == []
    with engine.begin() as conn:  # and the claim, the whole way, still the rule's
        conn.execute(text("DELETE FROM job_store_quota_holds"))
    claim_and_check(engine, 3)


@st.composite
def wide_queues(draw):
    """More stores than slots (so the directory is read in several chunks, and a claim of one type may read it in
    that type's order instead of wait order), each store with jobs of a few types spread in time."""
    n_stores = draw(st.integers(15, 60))
    specs = []
    for k in range(n_stores):
        for _ in range(draw(st.integers(1, 4))):
            specs.append((f"s{k:02d}", draw(st.sampled_from([2, 5])), draw(st.integers(0, 600)),
                          draw(st.sampled_from(QUEUED_TYPES))))
    limit = draw(st.integers(1, 12))
    type_sets = draw(st.lists(TYPE_SETS, min_size=1, max_size=3))
    return specs, limit, type_sets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=wide_queues())
def test_sql_matches_the_rule_with_many_stores_and_few_slots(raw_engine, case):
    """15 to 60 stores, a claim of 1 to 12, each for a random set of types: job for job as the rule says."""
    specs, limit, type_sets = case
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_store_arrivals RESTART IDENTITY"))
        base = conn.execute(text("SELECT now() - interval '1 hour'")).scalar()
        conn.execute(text("""
            INSERT INTO jobs (type, store_id, priority, run_at)
            SELECT u.type, u.store, u.priority, CAST(:base AS timestamptz) + make_interval(secs => u.t)
            FROM unnest(CAST(:types AS text[]), CAST(:stores AS text[]), CAST(:priorities AS smallint[]),
                        CAST(:ts AS integer[])) AS u(type, store, priority, t)"""),
                     {"base": base, "types": [x[3] for x in specs], "stores": [x[0] for x in specs],
                      "priorities": [x[1] for x in specs], "ts": [x[2] for x in specs]})
    for job_types in type_sets:
        rows = claim_and_check(raw_engine, limit, job_types=job_types)
        assert job_types is None or {row["type"] for row in rows} <= set(job_types)


def test_a_claim_of_one_type_whose_jobs_come_late_in_every_store(clean_db):
    """Every store's oldest jobs are of one type and the type claimed comes later in each: the wait order of the
    directory says little about the claim's order, so the claim reads the level in that type's order (sql/026,
    3a') -- and still takes exactly what the rule says, call after call."""
    engine = clean_db
    insert_jobs(engine, 200, job_type="test.a", store_id="'s' || (g % 50)", run_at="now() - interval '2 hours' "
                "+ make_interval(secs => g)")
    insert_jobs(engine, 100, job_type="test.b", store_id="'s' || (g % 50)", run_at="now() - interval '1 hour' "
                "+ make_interval(secs => g * 7 % 100)")
    served = Counter()
    for _ in range(6):
        rows = claim_and_check(engine, 7, job_types=["test.b"])
        assert {row["type"] for row in rows} == {"test.b"} and len(rows) == 7
        served.update(stores_of(rows))
    assert max(served.values()) == 1  # 42 different stores, each once: every store waits its turn


def test_endpoint_reports_the_distribution_and_applies_the_configured_cap(database_url, clean_db, caplog):
    """POST /process-pending: JOBS_MAX_PER_STORE from the settings caps each store per claim round; the response's
    `stores` and the log line show the distribution."""
    engine = clean_db
    insert_jobs(engine, 30, store_id="'a'")
    insert_jobs(engine, 30, store_id="'b'")
    insert_jobs(engine, 2)  # no store
    # 48 threads: the first round asks for 50 jobs; capped at 5 per store it gets 12, so the call needs more rounds
    app = create_app(make_settings(database_url, JOBS_MAX_PER_STORE=5, JOBS_CONCURRENCY=48))
    with app.app_context(), caplog.at_level(logging.INFO, logger="jobprocessor.process"):
        summary = app.test_client().post("/process-pending", json={"limit": 50}, headers=AUTH).json
        from jobprocessor.extensions import db

        db.engine.dispose()
    assert summary["claimed"] == 50 and summary["stores"] == {"a": 24, "b": 24, "": 2}
    assert summary["rounds"] >= 5  # at most 5 + 5 + 2 per round (uncapped, the first round would take all 50)
    record = next(json.loads(r.getMessage()) for r in caplog.records if '"process_pending"' in r.getMessage())
    assert record["distribution"] == "claimed 50 from 3 stores" and record["stores"] == summary["stores"]


# --- a typed claim skips what another transaction holds -----------------------------------------------------------

LOCK_WAIT = "2s"  # a claim that waited for a row lock fails after this (instead of hanging the suite)


def _typed_queue(engine) -> tuple[list[int], list[int]]:
    """Store 'mixed' holds test.echo and test.record jobs, so a claim of test.echo reads it by type (sql/026 3a',
    the per-store reads of jobs_fair_type_idx); store 'plain' holds test.echo only (read through jobs_fair_idx).
    Returns each store's test.echo ids, oldest first."""
    mixed = insert_jobs(engine, 4, "test.echo", store_id="'mixed'", run_at="now() - make_interval(secs => 100 - g)")
    insert_jobs(engine, 4, "test.record", store_id="'mixed'", run_at="now() - interval '200 seconds'")
    plain = insert_jobs(engine, 4, "test.echo", store_id="'plain'", run_at="now() - make_interval(secs => 100 - g)")
    return mixed, plain


def test_a_typed_claim_skips_rows_another_transaction_holds_instead_of_waiting(clean_db):
    """One connection holds the row lock of each store's oldest test.echo job (a finish, a bulk action or another
    claim in flight); a claim of test.echo from another connection, under a lock_timeout, returns the other jobs at
    once -- whole rounds and partial rounds, heads by primary key and reads by type -- and never a held one. A
    per-store read that waited (FOR UPDATE without SKIP LOCKED) fails here with a lock timeout."""
    engine = clean_db
    mixed, plain = _typed_queue(engine)
    held = {mixed[0], plain[0]}
    free = set(mixed[1:] + plain[1:])
    with engine.connect() as holder:
        hold = holder.begin()
        locked = holder.execute(text("SELECT id FROM jobs WHERE id = ANY(:ids) FOR UPDATE"),
                                {"ids": sorted(held)}).scalars().all()
        assert set(locked) == held
        try:
            for limit in (1, 2, 3, 6, 10):  # a partial round (heads first), whole rounds, more than is free
                with engine.connect() as conn:
                    claim = conn.begin()
                    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                    rows = queries.claim(conn, limit=limit, worker=WORKER, lease_s=60, job_types=["test.echo"]).jobs
                    claim.rollback()  # the same queue for the next limit
                ids = {row["id"] for row in rows}
                assert len(ids) == min(limit, len(free)), (limit, ids)
                assert ids <= free and {row["type"] for row in rows} == {"test.echo"}
                if limit >= 2:
                    assert {row["store_id"] for row in rows} == {"mixed", "plain"}  # both stores gave their rest
        finally:
            hold.rollback()


def test_process_pending_with_a_type_skips_rows_another_transaction_holds(database_url, clean_db):
    """The same through a call: `/process-pending?type=test.echo` while another connection holds two of the jobs
    runs the other six (every connection of the call has a lock_timeout, so a claim that waited fails the call)."""
    from sqlalchemy import event

    from jobprocessor.extensions import db

    engine = clean_db
    mixed, plain = _typed_queue(engine)
    held = {mixed[0], plain[0]}
    app = create_app(make_settings(database_url))
    with app.app_context():
        event.listen(db.engine, "connect",
                     lambda dbapi, record: dbapi.cursor().execute(f"SET lock_timeout = '{LOCK_WAIT}'"))
        with engine.connect() as holder:
            hold = holder.begin()
            holder.execute(text("SELECT id FROM jobs WHERE id = ANY(:ids) FOR UPDATE"), {"ids": sorted(held)})
            try:
                response = app.test_client().post("/process-pending?type=test.echo&budget_s=10", headers=AUTH)
            finally:
                hold.rollback()
        db.engine.dispose()
    assert response.status_code == 200, response.json
    assert (response.json["claimed"], response.json["succeeded"]) == (6, 6)
    done = {job["id"] for job in fetch_jobs(engine, "status = 'completed'")}
    assert done == set(mixed[1:] + plain[1:])
    assert {job["status"] for job in fetch_jobs(engine, "id = ANY(:ids)", ids=sorted(held))} == {"pending"}
    assert {job["status"] for job in fetch_jobs(engine, "type = 'test.record'")} == {"pending"}
