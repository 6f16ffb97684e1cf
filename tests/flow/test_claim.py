"""The fair claim with tenant flow control (sql/029) against real PostgreSQL: job for job what the pure rule
(fairness.allocate with a Flow) allocates on random queues with random pauses, limits (per store, per type, the
every-store row), weights, live and expired leases, recent and old claims, quota holds; and the promises one by one
(a pause from the next round, a store alone gets every slot, weights share the slots, a limit of 0)."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobprocessor import queries
from jobprocessor.policies.fairness import DueJob, allocate, allocate_claim, next_turns, store_key
from tests.support.db import insert_jobs
from tests.support.flow_fixtures import flow_from_db, pause, set_limit
from tests.support.claims import claim_once, queue_state, read_turns

STORES = ["a", "b", "c", "d", None]
TYPES = ["test.a", "test.b", "test.c"]
TYPE_SETS = st.one_of(st.none(), st.lists(st.sampled_from(TYPES + ["test.z"]), min_size=1, max_size=4))


def claim_and_check(engine, limit, **kwargs) -> list:
    """One claim, job for job and turn for turn what the rule allocates with the flow the tables say now."""
    due, turns = queue_state(engine)
    flow = flow_from_db(engine)
    now, result = claim_once(engine, limit, **kwargs)
    allocation = allocate_claim(due, limit, max_per_store=kwargs.get("max_per_store"), turns=turns,
                                types=kwargs.get("job_types"), flow=flow)
    expected = allocation.jobs
    assert [row["id"] for row in result.jobs] == [job.id for job in expected], flow
    assert [row["claim_order"] for row in result.jobs] == list(range(1, len(expected) + 1))
    assert read_turns(engine) == {**turns, **next_turns(expected, now, allocation.passed)}
    return result.jobs


def limit_fields(draw, per_type: bool) -> dict:
    fields = {"max_running": draw(st.none() | st.integers(0, 4)),
              "max_starts_per_minute": draw(st.none() | st.integers(0, 6))}
    if not per_type:
        fields["weight"] = draw(st.none() | st.integers(1, 3))
    return fields


@st.composite
def flow_cases(draw):
    specs = draw(st.lists(st.tuples(st.sampled_from(STORES), st.sampled_from([1, 5]), st.integers(0, 8),
                                    st.sampled_from(TYPES)), min_size=10, max_size=60))
    pauses = draw(st.lists(st.tuples(st.sampled_from(STORES), st.sampled_from(TYPES + [None]))
                           .filter(lambda p: p != (None, None)), max_size=3, unique=True))
    keys = draw(st.lists(st.tuples(st.sampled_from(STORES), st.sampled_from(TYPES + [None])), max_size=5,
                         unique=True))
    limits = {key: limit_fields(draw, key[1] is not None) for key in keys}
    for store, weight in draw(st.dictionaries(st.sampled_from(STORES[:4]), st.integers(1, 4), max_size=3)).items():
        limits.setdefault((store, None), {})["weight"] = weight
    running = draw(st.lists(st.tuples(st.sampled_from(STORES[:4]), st.sampled_from(TYPES), st.booleans()),
                            max_size=6))
    window = draw(st.lists(st.tuples(st.sampled_from(STORES[:4]), st.sampled_from(TYPES), st.integers(1, 3),
                                     st.booleans()), max_size=6))
    holds = draw(st.lists(st.tuples(st.sampled_from(STORES[:4]), st.sampled_from(TYPES), st.booleans()),
                          max_size=2, unique_by=lambda h: h[:2]))
    limit = draw(st.integers(1, 45))
    cap = draw(st.none() | st.integers(1, 6))
    type_sets = draw(st.lists(TYPE_SETS, min_size=1, max_size=3))
    return specs, pauses, limits, running, window, holds, limit, cap, type_sets


def build(engine, specs, pauses=(), limits=None, running=(), window=(), holds=()) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_store_arrivals, job_pauses, job_store_limits, "
                          "job_store_starts, job_store_quota_holds RESTART IDENTITY"))
        base = conn.execute(text("SELECT now() - interval '1 hour'")).scalar()
        for store, priority, t, job_type in specs:
            conn.execute(text("INSERT INTO jobs (type, store_id, priority, run_at) VALUES (:type, :s, :p, :r)"),
                         {"type": job_type, "s": store, "p": priority, "r": base + timedelta(seconds=t)})
        for store, job_type, live in running:  # another caller's leases, live or ended (rescued by the claim)
            conn.execute(text("INSERT INTO jobs (type, store_id, status, locked_by, locked_until, run_at) VALUES "
                              "(:type, :s, 'running', 'other', now() + CAST(:lease AS interval), :r)"),
                         {"type": job_type, "s": store, "lease": "1 hour" if live else "-1 minute", "r": base})
        for store, job_type, jobs, recent in window:
            conn.execute(text("INSERT INTO job_store_starts (store_key, type, claimed_at, jobs) VALUES "
                              "(:s, :t, now() - CAST(:ago AS interval), :n)"),
                         {"s": store, "t": job_type, "n": jobs, "ago": "10 seconds" if recent else "2 minutes"})
        for store, job_type, in_force in holds:
            conn.execute(text("INSERT INTO job_store_quota_holds (store_key, type, until) VALUES "
                              "(:s, :t, now() + CAST(:d AS interval))"),
                         {"s": store, "t": job_type, "d": "1 hour" if in_force else "-1 hour"})
    for store, job_type in pauses:
        pause(engine, store, job_type)
    for (store, job_type), fields in (limits or {}).items():
        set_limit(engine, store, job_type, **fields)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=flow_cases())
def test_sql_matches_the_rule_with_flow_control(raw_engine, case):
    """Random queues under random flow control, successive claims for random type sets: each claim takes what the
    rule allocates with the flow the tables say at that moment (its earlier claims now count as live leases and
    recent claims), in its order, and keeps the turns the rule says."""
    specs, pauses, limits, running, window, holds, limit, cap, type_sets = case
    build(raw_engine, specs, pauses, limits, running, window, holds)
    for job_types in type_sets:
        claim_and_check(raw_engine, limit, max_per_store=cap, job_types=job_types)


@st.composite
def wide_flow_cases(draw):
    """15-40 stores (several chunks of the directory), weights on some, limits on some, few slots."""
    n_stores = draw(st.integers(15, 40))
    specs = []
    for k in range(n_stores):
        for _ in range(draw(st.integers(1, 5))):
            specs.append((f"s{k:02d}", 5, draw(st.integers(0, 600)), draw(st.sampled_from(TYPES))))
    stores = [f"s{k:02d}" for k in range(n_stores)]
    limits = {}
    for store in draw(st.lists(st.sampled_from(stores), max_size=8, unique=True)):
        limits[(store, draw(st.sampled_from(TYPES + [None, None])))] = {
            "max_running": draw(st.none() | st.integers(0, 3)), "weight": None}
    for store in draw(st.lists(st.sampled_from(stores), max_size=6, unique=True)):
        fields = limits.setdefault((store, None), {})
        fields["weight"] = draw(st.integers(1, 4))
    pauses = draw(st.lists(st.tuples(st.sampled_from(stores), st.sampled_from(TYPES + [None])), max_size=3,
                           unique=True))
    limit = draw(st.integers(1, 14) | st.integers(30, 120))  # a partial round only, or whole rounds first
    type_sets = draw(st.lists(TYPE_SETS, min_size=1, max_size=3))
    return specs, pauses, limits, limit, type_sets


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=wide_flow_cases())
def test_sql_matches_the_rule_with_flow_control_over_many_stores(raw_engine, case):
    specs, pauses, limits, limit, type_sets = case
    build(raw_engine, specs, pauses, limits)
    for job_types in type_sets:
        claim_and_check(raw_engine, limit, job_types=job_types)


def stores_of(rows) -> Counter:
    return Counter(store_key(row["store_id"]) for row in rows)


def test_a_pause_holds_from_the_next_claim_and_resume_lets_it_go(clean_db):
    engine = clean_db
    insert_jobs(engine, 6, store_id="'a'")
    insert_jobs(engine, 6, store_id="'b'")
    insert_jobs(engine, 6, job_type="test.sleep", store_id="'b'")
    paused = [pause(engine, store_id="a"), pause(engine, job_type="test.sleep")]
    rows = claim_and_check(engine, 100)
    assert stores_of(rows) == {"b": 6} and {row["type"] for row in rows} == {"test.echo"}
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM job_pauses WHERE id = ANY(:ids)"), {"ids": paused})
    rows = claim_and_check(engine, 100)
    assert stores_of(rows) == {"a": 6, "b": 6}


def test_a_store_alone_gets_every_slot_whatever_its_weight(clean_db):
    engine = clean_db
    insert_jobs(engine, 50, store_id="'a'")
    set_limit(engine, "a", weight=3)
    assert len(claim_and_check(engine, 20)) == 20
    set_limit(engine, None, weight=7)  # every store's weight: a's own stays 3
    assert len(claim_and_check(engine, 11)) == 11


def test_weights_share_the_slots(clean_db):
    """A store of weight 3 gets three jobs for every one of a store of weight 1, round after round; a partial
    round goes to the store that has waited longest, its whole weight first."""
    engine = clean_db
    insert_jobs(engine, 100, store_id="'big'", run_at="now() - interval '1 hour'")
    insert_jobs(engine, 100, store_id="'small'", run_at="now() - interval '2 hours'")
    set_limit(engine, "big", weight=3)
    assert stores_of(claim_and_check(engine, 40)) == {"big": 30, "small": 10}
    # small waited longest before (older head) but was just served as well: the tie on the turn goes to the store
    # whose last job stood earlier (small's first job was 1st), so small first, then big's three
    assert [store_key(r["store_id"]) for r in claim_and_check(engine, 3)] == ["small", "big", "big"]


def test_limits_of_zero_and_per_type_limits(clean_db):
    """max_running 0 stops a store like a pause; a type's limit leaves the store's other types going."""
    engine = clean_db
    insert_jobs(engine, 10, store_id="'a'")
    insert_jobs(engine, 10, store_id="'b'")
    insert_jobs(engine, 10, job_type="test.sleep", store_id="'b'", run_at="now() - interval '1 hour'")
    set_limit(engine, "a", max_running=0)
    set_limit(engine, "b", "test.sleep", max_running=2)
    rows = claim_and_check(engine, 100)
    assert Counter((r["store_id"], r["type"]) for r in rows) == {("b", "test.sleep"): 2, ("b", "test.echo"): 10}
    assert claim_and_check(engine, 100) == []  # b's two sleeps still hold their leases


def test_starts_per_minute_count_the_last_minute_of_claims(clean_db):
    engine = clean_db
    insert_jobs(engine, 20, store_id="'a'")
    set_limit(engine, "a", max_starts_per_minute=5)
    assert len(claim_and_check(engine, 3)) == 3
    assert len(claim_and_check(engine, 100)) == 2  # 3 + 2 in this minute
    assert claim_and_check(engine, 100) == []
    with engine.begin() as conn:  # a minute later (the claims' records age; the leases do not matter here)
        conn.execute(text("UPDATE job_store_starts SET claimed_at = claimed_at - interval '61 seconds'"))
    assert len(claim_and_check(engine, 100)) == 5
    with engine.connect() as conn:  # the claim that recorded its jobs deleted the store's records past the minute
        assert conn.execute(text("SELECT sum(jobs) FROM job_store_starts")).scalar() == 5


def test_the_starts_record_is_kept_for_the_stores_a_claim_took_jobs_of(clean_db):
    """A claim records its jobs of each store with a starts limit and deletes that store's records past the
    minute; a store it counted but took nothing of (here: at its limit) gets no record and keeps its old rows --
    they count for nothing -- until a claim takes one of its jobs (v9, sql/034; v8 deleted them too)."""
    engine = clean_db
    insert_jobs(engine, 10, store_id="'a'", run_at="now() - interval '2 hours'")
    insert_jobs(engine, 10, store_id="'b'", run_at="now() - interval '1 hour'")
    set_limit(engine, "a", max_starts_per_minute=3)
    set_limit(engine, "b", max_starts_per_minute=4)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_store_starts (store_key, type, claimed_at, jobs) VALUES "
                          "('a', 'test.echo', now() - interval '10 seconds', 3), "
                          "('a', 'test.echo', now() - interval '2 minutes', 5), "
                          "('b', 'test.echo', now() - interval '2 minutes', 5)"))
    assert stores_of(claim_and_check(engine, 100)) == {"b": 4}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT store_key, jobs, claimed_at > now() - interval '1 minute' AS recent "
                                 "FROM job_store_starts ORDER BY store_key, claimed_at")).all()
    assert [tuple(r) for r in rows] == [("a", 5, False), ("a", 3, True), ("b", 4, True)]
    assert claim_and_check(engine, 100) == []  # a at 3 of 3, b at 4 of 4 in this minute


def test_rows_that_set_nothing_the_claim_honours_leave_a_store_as_if_unset(clean_db):
    """A store whose only row sets weight 1, or only a token quota, or a type's row with no limit, is claimed as a
    store without rows (v9's plan leaves such stores out, sql/034), beside a store whose weight counts."""
    engine = clean_db
    for k, store in enumerate("abcde"):
        insert_jobs(engine, 6, store_id=f"'{store}'", run_at=f"now() - interval '{60 - k} minutes'")
    set_limit(engine, "a", weight=1)
    set_limit(engine, "b", openai_tokens_per_minute=1000)
    set_limit(engine, "c", "test.echo")
    set_limit(engine, "d", weight=2)
    assert stores_of(claim_and_check(engine, 6)) == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 1}
    assert len(claim_and_check(engine, 7, job_types=["test.echo"])) == 7


def test_a_claim_for_the_types_of_a_process_under_pauses_and_caps(clean_db):
    """queries.claim with job_types (what every tick passes) under a type pause and a per-type cap of the
    every-store row, over 30 stores."""
    engine = clean_db
    insert_jobs(engine, 300, store_id="'s' || (g % 30)", run_at="now() - make_interval(secs => g)")
    insert_jobs(engine, 300, job_type="test.sleep", store_id="'s' || (g % 30)",
                run_at="now() - make_interval(secs => g)")
    insert_jobs(engine, 60, job_type="test.record", store_id="'s' || (g % 30)")
    pause(engine, job_type="test.record")
    set_limit(engine, None, "test.sleep", max_running=1)
    set_limit(engine, "s1", weight=2)
    for limit in (10, 45, 100):
        rows = claim_and_check(engine, limit, job_types=["test.echo", "test.sleep", "test.record", "test.z"])
        assert "test.record" not in {r["type"] for r in rows}
    with engine.connect() as conn:
        per_store = conn.execute(text("SELECT max(n) FROM (SELECT count(*) AS n FROM jobs WHERE status = 'running' "
                                      "AND type = 'test.sleep' GROUP BY store_id) x")).scalar()
    assert per_store == 1


def test_the_wanted_types_less_the_paused_ones_for_an_untyped_claim(clean_db):
    engine = clean_db
    insert_jobs(engine, 5, store_id="'a'")
    insert_jobs(engine, 5, job_type="test.sleep", store_id="'a'")
    pause(engine, job_type="test.sleep")
    _, result = claim_once(engine, 100)
    assert {row["type"] for row in result.jobs} == {"test.echo"}
    pause(engine, job_type="test.echo")
    _, result = claim_once(engine, 100)
    assert result.jobs == []  # every type pending is paused


def test_due_jobs_in_the_rule_and_the_claim_agree_on_a_store_of_one_job(clean_db):
    # the smallest case of a weight and a cap together: one job, weight 5, cap 1
    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    set_limit(engine, "a", weight=5, max_running=1)
    assert [r["id"] for r in claim_and_check(engine, 10)] == [1]
    assert allocate([DueJob(1, 5, "a", 0)], 10) == [DueJob(1, 5, "a", 0)]


def test_queries_claim_signature_is_unchanged():
    # the processor's path (queries.CLAIM) calls the same function with the same arguments as in v3
    assert "jobs_fair_claim(CAST(:limit AS integer), CAST(:job_types AS text[])" in queries.CLAIM


def counted_stores(conn, stores) -> set:
    """Of `stores`, those this transaction's claim counted: it holds their try-lock (advisory class 20225)."""
    return set(conn.execute(text(
        "SELECT s FROM unnest(CAST(:stores AS text[])) AS s WHERE EXISTS (SELECT 1 FROM pg_locks l "
        "WHERE l.pid = pg_backend_pid() AND l.locktype = 'advisory' AND l.classid = 20225 AND l.objsubid = 2 "
        "AND l.objid = CAST(hashtext(s)::bigint & 4294967295 AS oid))"), {"stores": list(stores)}).scalars())


def test_a_store_at_its_limit_is_passed_over_counted_once_and_served_within_one_turn_once_free(clean_db):
    """'full' (max_running 1, its one slot leased) has waited longest, in front of 20 stores. The first claim of 2
    counts it, passes it over and restarts its wait; the next claim reads the stores behind it (its slots + 9 rows
    of the directory) and does not count it again; once its job ends, it gets a job within one turn of every
    store (20 stores, 2 a claim: 10 claims), each claim as the rule says."""
    engine = clean_db
    others = [f"s{k:02d}" for k in range(20)]
    insert_jobs(engine, 5, store_id="'full'", run_at="now() - interval '2 hours'")
    for k, store in enumerate(others):
        insert_jobs(engine, 5, store_id=f"'{store}'", run_at=f"now() - interval '{60 - k} minutes'")
    set_limit(engine, "full", max_running=1)
    for store in others:
        set_limit(engine, store, max_running=3)  # counted too, when read
    with engine.begin() as conn:
        leased = conn.execute(text("UPDATE jobs SET status = 'running', locked_by = 'other', "
                                   "locked_until = now() + interval '1 hour' WHERE id = 1 RETURNING id")).scalar()
    with engine.begin() as conn:
        assert stores_of(queries.claim(conn, limit=2, worker="w", lease_s=300).jobs) == {"s00": 1, "s01": 1}
        assert "full" in counted_stores(conn, ["full"])
    with engine.begin() as conn:
        assert stores_of(queries.claim(conn, limit=2, worker="w", lease_s=300).jobs) == {"s02": 1, "s03": 1}
        counted = counted_stores(conn, ["full", *others])
        assert "full" not in counted and {"s02", "s03"} <= counted
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'completed', locked_by = NULL, locked_until = NULL "
                          "WHERE id = :id"), {"id": leased})
    for _ in range(10):
        if "full" in stores_of(claim_and_check(engine, 2)):
            break
    else:
        raise AssertionError("the freed store waited more than one turn of every store")
