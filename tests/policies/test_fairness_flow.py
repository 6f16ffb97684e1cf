"""The allocation rule with tenant flow control (fairness.allocate with a Flow), as a pure function: work-conserving
among the stores that may run, no store above its weighted share while another is below it and can run, limits
never exceeded, priority first, pauses honoured; a store held by its limits is passed over (its wait restarts) only
when a claim has served a store behind it, and once freed it is served within one turn of every store."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from jobprocessor.policies.fairness import DueJob, Flow, Turn, _rank_key, allocate, allocate_claim, next_turns

STORES = ["", "a", "b", "c", "d"]
TYPES = ["x", "y", "z"]
PRIORITIES = [1, 5]


@st.composite
def cases(draw):
    specs = draw(st.lists(st.tuples(st.sampled_from(STORES), st.sampled_from(PRIORITIES), st.integers(0, 20),
                                    st.sampled_from(TYPES)), max_size=70))
    jobs = [DueJob(id=i + 1, store=s, priority=p, run_at=t, type=ty) for i, (s, p, t, ty) in enumerate(specs)]
    flow = Flow(paused_types=frozenset(draw(st.sets(st.sampled_from(TYPES), max_size=1))),
                paused_stores=frozenset(draw(st.sets(st.sampled_from(STORES), max_size=1))),
                paused_pairs=frozenset(draw(st.sets(st.tuples(st.sampled_from(STORES), st.sampled_from(TYPES)),
                                                    max_size=2))),
                allowance=draw(st.dictionaries(st.sampled_from(STORES), st.integers(0, 8), max_size=3)),
                type_allowance=draw(st.dictionaries(st.tuples(st.sampled_from(STORES), st.sampled_from(TYPES)),
                                                    st.integers(0, 4), max_size=3)),
                weights=draw(st.dictionaries(st.sampled_from(STORES), st.integers(1, 4), max_size=4)))
    limit = draw(st.integers(0, 80))
    cap = draw(st.none() | st.integers(1, 12))
    turns = draw(st.dictionaries(st.sampled_from(STORES), st.builds(Turn, st.integers(0, 30), st.integers(1, 60))))
    return jobs, flow, limit, cap, turns


def store_room(store, flow, cap, taken: Counter) -> float:
    room = float("inf") if cap is None else cap - taken[store]
    return min(room, flow.allowance[store] - taken[store]) if store in flow.allowance else room


def type_room(job, flow, taken_of_type: Counter) -> float:
    key = (job.store, job.type)
    return flow.type_allowance[key] - taken_of_type[key] if key in flow.type_allowance else float("inf")


def can_still_run(job, flow, cap, taken, taken_of_type) -> bool:
    """After the claim: the job was not taken, may run, and neither its store nor its type is at a limit."""
    return flow.may_run(job) and store_room(job.store, flow, cap, taken) > 0 and type_room(job, flow,
                                                                                          taken_of_type) > 0


@settings(max_examples=120, deadline=None)
@given(cases())
def test_limits_and_pauses_are_never_exceeded(case):
    jobs, flow, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    assert len(out) <= limit and len({j.id for j in out}) == len(out) and set(out) <= set(jobs)
    assert not [j for j in out if j.type in flow.paused_types or j.store in flow.paused_stores
                or (j.store, j.type) in flow.paused_pairs]
    taken = Counter(j.store for j in out)
    for store, allowance in flow.allowance.items():
        assert taken[store] <= max(allowance, 0)
    taken_of_type = Counter((j.store, j.type) for j in out)
    for key, allowance in flow.type_allowance.items():
        assert taken_of_type[key] <= max(allowance, 0)
    if cap is not None:
        assert max(taken.values(), default=0) <= cap


@settings(max_examples=120, deadline=None)
@given(cases())
def test_work_conserving_among_the_stores_that_may_run(case):
    """It takes as many jobs as the limit, or every job that may run within the stores' and types' allowances."""
    jobs, flow, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    runnable = [j for j in jobs if flow.may_run(j)]
    possible = 0
    for store in {j.store for j in runnable}:
        per_type = Counter(j.type for j in runnable if j.store == store)
        n = sum(min(count, flow.type_allowance.get((store, t), count)) for t, count in per_type.items())
        possible += max(0, min(n, store_room(store, flow, cap, Counter())))
    assert len(out) == min(limit, possible)


@settings(max_examples=120, deadline=None)
@given(cases())
def test_priority_first_and_oldest_first_within_a_store(case):
    jobs, flow, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    assert [j.priority for j in out] == sorted(j.priority for j in out)
    taken = Counter(j.store for j in out)
    taken_of_type = Counter((j.store, j.type) for j in out)
    chosen = set(out)
    lowest_taken = max((j.priority for j in out), default=0)
    for job in jobs:
        if job not in chosen and job.priority < lowest_taken:
            # a more urgent job was left out only because it may not run or its store or type is at a limit
            assert not can_still_run(job, flow, cap, taken, taken_of_type)
    # within a store, level and type, the jobs taken are the oldest ones
    for store in STORES:
        for priority in PRIORITIES:
            for job_type in TYPES:
                queue = sorted((j for j in jobs if (j.store, j.priority, j.type) == (store, priority, job_type)),
                               key=lambda j: (j.run_at, j.id))
                n = sum(1 for j in queue if j in chosen)
                assert set(queue[:n]) == {j for j in queue if j in chosen}


@settings(max_examples=120, deadline=None)
@given(cases())
def test_no_store_above_its_weighted_share_while_another_is_below_and_can_run(case):
    """Within a level, with rounds of `weight` jobs per store: a store that has started round k+1 has a job there
    only if every store that can still run has finished round k, and a store that can still run and is still in
    round k+1 (or has not started it) ranks after every store that got into round k+1 before it."""
    jobs, flow, limit, cap, turns = case
    out = allocate(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    taken = Counter(j.store for j in out)
    taken_of_type = Counter((j.store, j.type) for j in out)
    chosen = set(out)
    for priority in PRIORITIES:
        got = Counter(j.store for j in out if j.priority == priority)
        waiting = {j.store for j in jobs if j.priority == priority and j not in chosen
                   and can_still_run(j, flow, cap, taken, taken_of_type)}
        for s in got:
            rounds_begun = -(-got[s] // flow.weight(s))
            for t in waiting:
                if t == s:
                    continue
                rounds_done = got[t] // flow.weight(t)
                assert rounds_begun <= rounds_done + 1, (s, t)


def test_weights_of_one_are_the_rule_without_flow_control():
    jobs = [DueJob(i, 5, s, i % 7) for i, s in enumerate(["a", "b", "c"] * 20, start=1)]
    assert allocate(jobs, 25, flow=Flow(weights={"a": 1, "b": 1})) == allocate(jobs, 25)


def test_a_store_alone_gets_every_slot_unless_a_hard_limit_says_otherwise():
    jobs = [DueJob(i, 5, "a", i) for i in range(1, 101)]
    assert len(allocate(jobs, 60, flow=Flow(weights={"a": 7}))) == 60
    assert len(allocate(jobs, 60, flow=Flow(weights={"a": 7}, allowance={"a": 9}))) == 9


def test_weights_scale_the_share_round_by_round():
    jobs = [DueJob(i, 5, s, 0) for i, s in enumerate(["big"] * 50 + ["small"] * 50, start=1)]
    out = allocate(jobs, 40, flow=Flow(weights={"big": 3}))
    assert Counter(j.store for j in out) == {"big": 30, "small": 10}
    assert [j.store for j in out[:8]] == ["big"] * 3 + ["small"] + ["big"] * 3 + ["small"]


def test_a_type_at_its_limit_is_skipped_and_the_store_goes_on():
    jobs = [DueJob(1, 5, "a", 0, "x"), DueJob(2, 5, "a", 1, "x"), DueJob(3, 5, "a", 2, "y"),
            DueJob(4, 5, "a", 3, "x"), DueJob(5, 5, "a", 4, "y")]
    out = allocate(jobs, 10, flow=Flow(type_allowance={("a", "x"): 1}))
    assert [j.id for j in out] == [1, 3, 5]


@settings(max_examples=120, deadline=None)
@given(cases())
def test_only_held_stores_ranking_before_a_store_served_at_their_level_are_passed_over(case):
    jobs, flow, limit, cap, turns = case
    allocation = allocate_claim(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    assert allocation.jobs == allocate(jobs, limit, max_per_store=cap, turns=turns, flow=flow)
    served = {j.store for j in allocation.jobs}
    for store in allocation.passed:
        assert flow.allowance.get(store, 1) <= 0 and store not in served
        mine = [j for j in jobs if j.store == store and flow.may_run(j)]
        # at some level, a store served there ranks after it
        assert any(_rank_key(min((j for j in mine if j.priority == level), key=lambda j: (j.run_at, j.id)),
                             turns.get(store))
                   < _rank_key(min((j for j in jobs if j.store == other.store and j.priority == level
                                    and flow.may_run(j)), key=lambda j: (j.run_at, j.id)), turns.get(other.store))
                   for level in {j.priority for j in mine}
                   for other in allocation.jobs if other.priority == level)
    assert next_turns(allocation.jobs, 99, allocation.passed) == {
        **{store: Turn(99, 0) for store in allocation.passed},
        **{j.store: Turn(99, n) for n, j in enumerate(allocation.jobs, start=1)}}


def test_a_store_at_its_limit_is_passed_over_and_waits_its_turn_behind_the_others():
    # "full" has waited longest, but its allowance is 0: the claim serves a and b, passes it over
    jobs = [DueJob(1, 5, "full", 0), DueJob(2, 5, "a", 5), DueJob(3, 5, "b", 6), DueJob(4, 5, "c", 7)]
    turns = {"full": Turn(1, 1), "a": Turn(2, 1), "b": Turn(3, 1), "c": Turn(4, 1)}
    allocation = allocate_claim(jobs, 2, turns=turns, flow=Flow(allowance={"full": 0}))
    assert [j.id for j in allocation.jobs] == [2, 3] and allocation.passed == {"full"}
    # its slot frees: c, which waited longer than its restarted wait, goes first, then it
    turns = {**turns, **next_turns(allocation.jobs, 10, allocation.passed)}
    assert [j.id for j in allocate([jobs[0], jobs[3]], 2, turns=turns)] == [4, 1]
    # a store held but ranking after the last store served is not reached: its turn stays
    late = allocate_claim(jobs, 1, turns={**turns, "full": Turn(20, 1)}, flow=Flow(allowance={"full": 0}))
    assert late.passed == frozenset()


def test_nothing_served_at_a_level_passes_nobody_there():
    jobs = [DueJob(1, 1, "a", 0), DueJob(2, 5, "full", 0), DueJob(3, 5, "b", 1)]
    assert allocate_claim(jobs, 1, flow=Flow(allowance={"full": 0})).passed == frozenset()
    assert allocate_claim(jobs, 2, flow=Flow(allowance={"full": 0})).passed == {"full"}


@settings(max_examples=60, deadline=None)
@given(n_stores=st.integers(2, 12), limit=st.integers(1, 5), held_for=st.integers(0, 6))
def test_a_freed_store_is_served_within_one_turn_of_every_store(n_stores, limit, held_for):
    """Successive claims on a backlog of every store: a store held for `held_for` claims and then freed gets a job
    within ceil(stores / limit) claims, as any store does; and it is never passed over while it is free."""
    stores = [f"s{k:02d}" for k in range(n_stores)]
    held = stores[n_stores // 2]  # (not the first key: ties on the wait go by store key)
    jobs = [DueJob(k * 100 + i, 5, store, 0) for k, store in enumerate(stores) for i in range(1, 40)]
    turns: dict = {}
    for n in range(held_for):
        allocation = allocate_claim(jobs, limit, turns=turns, flow=Flow(allowance={held: 0}))
        assert held not in {j.store for j in allocation.jobs}
        jobs = [j for j in jobs if j not in allocation.jobs]
        turns.update(next_turns(allocation.jobs, n + 1, allocation.passed))
    for n in range(held_for, held_for + -(-n_stores // limit)):
        allocation = allocate_claim(jobs, limit, turns=turns)
        assert not allocation.passed
        if held in {j.store for j in allocation.jobs}:
            break
        jobs = [j for j in jobs if j not in allocation.jobs]
        turns.update(next_turns(allocation.jobs, n + 1, allocation.passed))
    else:
        raise AssertionError("the freed store waited more than one turn of every store")
