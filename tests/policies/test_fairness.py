"""The allocation rule of the fair claim, as a pure function (no database): jobprocessor.policies.fairness."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from jobprocessor.policies.fairness import DueJob, Turn, allocate, next_turns, store_key

STORES = ["", "a", "b", "c", "d", "e"]
PRIORITIES = [1, 2, 5, 10]


@st.composite
def queues(draw):
    """Due jobs over a few stores and levels, a limit, maybe a cap, maybe earlier turns."""
    specs = draw(st.lists(st.tuples(st.sampled_from(STORES), st.sampled_from(PRIORITIES), st.integers(0, 20)),
                          max_size=60))
    jobs = [DueJob(id=i + 1, store=s, priority=p, run_at=t) for i, (s, p, t) in enumerate(specs)]
    limit = draw(st.integers(0, 70))
    cap = draw(st.none() | st.integers(1, 12))
    turns = draw(st.dictionaries(st.sampled_from(STORES), st.builds(Turn, st.integers(0, 30), st.integers(1, 60))))
    return jobs, limit, cap, turns


def _rank(jobs, store, priority, turns):
    head = min((j for j in jobs if j.store == store and j.priority == priority), key=lambda j: (j.run_at, j.id))
    turn = turns.get(store)
    if turn is None:
        return (head.run_at, 0, head.run_at, head.store)
    return (max(head.run_at, turn.served_at), turn.served_pos, head.run_at, head.store)


@settings(max_examples=200, deadline=None)
@given(queues())
def test_work_conserving_and_cap(case):
    jobs, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns)
    per_store = Counter(j.store for j in jobs)
    allowed = sum(n if cap is None else min(n, cap) for n in per_store.values())
    assert len(out) == min(limit, allowed)  # never fewer than it could take
    assert len({j.id for j in out}) == len(out)  # each job at most once
    assert set(out) <= set(jobs)
    if cap is not None:
        assert max(Counter(j.store for j in out).values(), default=0) <= cap


@settings(max_examples=200, deadline=None)
@given(queues())
def test_priority_first_and_store_order(case):
    jobs, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns)
    taken = Counter(j.store for j in out)
    chosen = set(out)
    assert [j.priority for j in out] == sorted(j.priority for j in out)  # claim order starts with priority
    lowest_taken = max((j.priority for j in out), default=0)
    for job in jobs:
        if job not in chosen and job.priority < lowest_taken:
            # a more urgent job was left out: only because its store had reached the cap
            assert cap is not None and taken[job.store] == cap
    # within a store and level, the jobs taken are the oldest ones (run_at, then id)
    for store in STORES:
        for priority in PRIORITIES:
            queue = sorted((j for j in jobs if j.store == store and j.priority == priority),
                           key=lambda j: (j.run_at, j.id))
            n = sum(1 for j in queue if j in chosen)
            assert set(queue[:n]) == {j for j in queue if j in chosen}


@settings(max_examples=200, deadline=None)
@given(queues())
def test_max_min_fair_within_a_level(case):
    jobs, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns)
    taken = Counter(j.store for j in out)
    got = Counter((j.priority, j.store) for j in out)
    due = Counter((j.priority, j.store) for j in jobs)
    for priority in PRIORITIES:
        stores = [s for s in STORES if due[priority, s]]
        for s in stores:
            for t in stores:
                t_satisfied = got[priority, t] == due[priority, t] or (cap is not None and taken[t] == cap)
                if got[priority, s] >= got[priority, t] + 2:
                    # nobody holds two more than a store that still has due jobs and room: the fair share
                    assert t_satisfied
                if got[priority, s] == got[priority, t] + 1 and not t_satisfied:
                    # the extra job of a partial round went to the store that waited longer
                    assert _rank(jobs, s, priority, turns) < _rank(jobs, t, priority, turns)


def test_one_store_alone_gets_the_whole_limit():
    jobs = [DueJob(i, 5, "a", i) for i in range(1, 501)]
    assert allocate(jobs, 100) == jobs[:100]
    assert len(allocate(jobs, 100, max_per_store=20)) == 20  # the cap is hard


def test_big_store_beside_small_ones():
    big = [DueJob(i, 5, "big", 0) for i in range(1, 5001)]
    small = [DueJob(5000 + 50 * k + i, 5, f"s{k}", 1) for k in range(99) for i in range(50)]
    out = allocate(big + small, 100)
    assert Counter(j.store for j in out) == {s: 1 for s in ["big"] + [f"s{k}" for k in range(99)]}
    out = allocate(big + small, 1000)
    counts = Counter(j.store for j in out)
    assert counts["big"] == 10 and all(counts[f"s{k}"] == 10 for k in range(99))
    # a store that needs less leaves the rest to the others
    few = [DueJob(90000 + i, 5, "few", 0) for i in range(3)]
    counts = Counter(j.store for j in allocate(big + few, 100))
    assert counts == {"big": 97, "few": 3}


def test_urgent_before_normal_across_stores():
    normal = [DueJob(i, 5, "a", 0) for i in range(1, 11)]
    urgent = [DueJob(100 + i, 1, "b", 5) for i in range(3)]
    out = allocate(normal + urgent, 5)
    assert [j.store for j in out] == ["b", "b", "b", "a", "a"]


def test_no_store_is_a_store_of_its_own():
    assert store_key(None) == "" and store_key("s1") == "s1"
    jobs = [DueJob(i, 5, "", 0) for i in range(1, 11)] + [DueJob(100 + i, 5, "s1", 1) for i in range(10)]
    assert Counter(j.store for j in allocate(jobs, 6)) == {"": 3, "s1": 3}


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 12), st.integers(1, 11), st.integers(20, 40), st.booleans())
def test_round_robin_over_calls(n_stores, limit, per_store, same_time):
    """More stores than slots, each with a backlog enqueued at once: calls serve every store in turn, none waits
    more than one call behind, and the extra slot of a partial round rotates too."""
    stores = [f"s{k}" for k in range(n_stores)]
    due = [DueJob(k * per_store + i + 1, 5, s, 0 if same_time else k) for k, s in enumerate(stores)
           for i in range(per_store)]
    turns: dict = {}
    served: Counter = Counter()
    for now in range(100, 100 + (per_store * n_stores) // max(limit, 1) // 2):
        out = allocate(due, limit, turns=turns)
        assert len(out) == limit
        served.update(j.store for j in out)
        assert max(served[s] for s in stores) - min(served[s] for s in stores) <= 1
        turns.update(next_turns(out, now))
        chosen = set(out)
        due = [j for j in due if j not in chosen]


def test_turns_record_the_last_place_of_each_store():
    jobs = [DueJob(1, 1, "a", 0), DueJob(2, 5, "b", 0), DueJob(3, 5, "a", 0), DueJob(4, 5, "b", 1)]
    out = allocate(jobs, 4)
    # level 5: a and b tie on their wait (heads at 0, never served): by store key, a first
    assert [j.id for j in out] == [1, 3, 2, 4]
    assert next_turns(out, 7) == {"a": Turn(7, 2), "b": Turn(7, 4)}


def test_a_store_served_recently_waits_behind_one_that_was_not():
    jobs = [DueJob(1, 5, "a", 0), DueJob(2, 5, "b", 5)]
    assert allocate(jobs, 1) == [jobs[0]]
    assert allocate(jobs, 1, turns={"a": Turn(10, 1)}) == [jobs[1]]
    # served long ago, before its job came due: the job's own wait counts
    assert allocate(jobs, 1, turns={"a": Turn(-3, 1)}) == [jobs[0]]



@settings(max_examples=150, deadline=None)
@given(queues(), st.none() | st.sets(st.sampled_from(["t.a", "t.b", "t.c", "t.z"])), st.randoms())
def test_a_type_filter_is_the_rule_on_the_jobs_of_those_types(case, types, rnd):
    """With `types`, the rule is the same rule applied to the due jobs of those types only: the others do not
    exist for the claim (they neither take slots nor count in a store's wait); None is every type."""
    jobs, limit, cap, turns = case
    typed = [DueJob(j.id, j.priority, j.store, j.run_at, rnd.choice(["t.a", "t.b", "t.c"])) for j in jobs]
    out = allocate(typed, limit, max_per_store=cap, turns=turns, types=types)
    wanted = [j for j in typed if types is None or j.type in types]
    assert out == allocate(wanted, limit, max_per_store=cap, turns=turns)
    assert all(types is None or j.type in types for j in out)
