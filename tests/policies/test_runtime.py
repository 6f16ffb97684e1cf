"""The start rule's pieces as pure functions: the estimate, when a job may start, its deadline, lane and round
sizes."""
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobprocessor.policies import runtime
from jobprocessor.policies.runtime import MIN_SAMPLES, estimate, may_start

durations = st.floats(min_value=0, max_value=3600, allow_nan=False)
samples = st.lists(durations, min_size=MIN_SAMPLES, max_size=runtime.SAMPLES_KEPT)
timeouts = st.floats(min_value=0.1, max_value=86400, allow_nan=False)
budgets = st.floats(min_value=1, max_value=900, allow_nan=False)


def test_the_readme_examples():
    # 0.2 s jobs, no declared timeout (30 s), a 20 s budget: measured, they start while 0.23 s is left
    assert estimate([0.2] * 20, 30, 20).high_s == pytest.approx(0.2 * 1.1 + 0.01)
    # not measured yet: the timeout, capped at half the budget, so a first wave starts and measures
    assert estimate([], 30, 20).high_s == 10 and not estimate([], 30, 20).measured
    assert estimate([], 60, 50).high_s == 25
    assert estimate([], 5, 50).high_s == 5
    # a slow outlier below the 95th percentile does not move it; the 95th percentile does
    assert estimate([1.0] * 19 + [100.0], 600, 900).high_s == pytest.approx(1.0 * 1.1 + 0.01)
    assert estimate([1.0] * 18 + [100.0] * 2, 600, 900).high_s == pytest.approx(100 * 1.1 + 0.01)


def test_fewer_than_min_samples_is_unmeasured():
    assert not estimate([0.1] * (MIN_SAMPLES - 1), 30, 90).measured
    assert estimate([0.1] * MIN_SAMPLES, 30, 90).measured


@given(samples, timeouts, budgets)
def test_estimate_covers_the_95th_percentile_and_never_exceeds_the_timeout(values, timeout, budget):
    found = estimate(values, timeout, budget)
    assert found.high_s <= timeout
    assert found.high_s >= min(timeout, runtime.quantile(values, 0.95))
    assert found.mean_s == pytest.approx(sum(values) / len(values))


@given(samples, st.floats(min_value=0, max_value=100), timeouts, budgets)
def test_slower_runs_never_lower_the_estimate(values, slower_by, timeout, budget):
    slower = [v + slower_by for v in values]
    assert estimate(slower, timeout, budget).high_s >= estimate(values, timeout, budget).high_s


@given(st.lists(durations, max_size=MIN_SAMPLES - 1), timeouts, budgets)
def test_unmeasured_types_get_a_first_wave_in_any_budget(values, timeout, budget):
    found = estimate(values, timeout, budget)
    assert found.high_s == min(timeout, budget / 2)
    assert may_start(found, budget)  # at the start of a call it always fits


@given(samples.map(lambda v: v[-runtime.SAMPLES_KEPT:]), st.lists(durations, min_size=runtime.SAMPLES_KEPT,
                                                                   max_size=runtime.SAMPLES_KEPT))
def test_the_window_forgets_old_runs(old, new):
    # once a window's worth of new runs came in, the old ones no longer matter
    window = (old + new)[-runtime.SAMPLES_KEPT:]
    assert estimate(window, 86400, 900) == estimate(new, 86400, 900)


@given(st.floats(min_value=0, max_value=1000), st.floats(min_value=-10, max_value=1000))
def test_start_rule(high, left):
    found = runtime.Estimate(high_s=high, mean_s=None, measured=True)
    assert may_start(found, left) == (left > 0 and high <= left)


@given(timeouts, st.floats(min_value=-5, max_value=2000))
def test_deadline_is_the_earlier_of_timeout_and_budget(timeout, left):
    seconds, cut = runtime.deadline(timeout, left)
    assert seconds == max(0.0, min(timeout, left))
    assert cut == (left < timeout)


def test_rate_limited_threads_follow_littles_law():
    # 450 requests/min at 8 s each: 60 in flight, with headroom for the spread
    assert runtime.rate_limited_threads(450 / 60, 8.0, cap=1000, timeout_s=60) == math.ceil(60 * 1.25)
    # not measured yet: as if every call took its whole timeout (the gate paces the starts meanwhile)
    assert runtime.rate_limited_threads(450 / 60, None, cap=1000, timeout_s=60) == math.ceil(450 * 1.25)
    assert runtime.rate_limited_threads(450 / 60, 8.0, cap=50, timeout_s=60) == 50


@given(st.floats(min_value=0.001, max_value=10_000), st.one_of(st.none(), st.floats(min_value=0, max_value=600)),
       st.integers(min_value=1, max_value=1000), st.floats(min_value=0.1, max_value=86400))
def test_rate_limited_threads_stay_within_bounds(rate, latency, cap, timeout):
    threads = runtime.rate_limited_threads(rate, latency, cap=cap, timeout_s=timeout)
    assert 1 <= threads <= cap
    if latency is not None and latency <= timeout:  # measured below the timeout: never more than unmeasured
        assert threads <= runtime.rate_limited_threads(rate, None, cap=cap, timeout_s=timeout)


def one_lane(free, threads, ready, mean):
    return [runtime.LaneLoad(free=free, threads=threads, ready=ready, mean_run_s=mean)]


def test_round_sizes():
    base = dict(horizon_s=0.5, left=10_000, max_round=1000)
    # unmeasured: the free threads plus a small prefetch
    assert runtime.round_size(one_lane(8, 8, 0, None), **base) == 10
    # quick jobs come in big rounds, slow ones in small ones
    assert runtime.round_size(one_lane(8, 8, 0, 0.0001), **base) == 1000
    assert runtime.round_size(one_lane(8, 8, 0, 0.2), **base) == 8 + 20
    assert runtime.round_size(one_lane(75, 75, 0, 8), **base) == 75 + 5
    # enough waiting and no thread idle: no claim; a thread about to idle: a claim
    assert runtime.round_size(one_lane(0, 8, 20, 0.2), **base) == 0
    assert runtime.round_size(one_lane(2, 8, 0, 0.2), **base) == 2 + 20
    # never past the call's limit
    assert runtime.round_size(one_lane(8, 8, 0, 0.2), horizon_s=0.5, left=3, max_round=1000) == 3


def test_jobs_waiting_in_one_lane_hold_back_the_others_wants():
    # the handler threads are all free but the queue holds only rate-limited jobs, whose lane is full: the jobs
    # claimed for nobody stay bounded (at most what the free lane wants), instead of growing every round
    cpu = runtime.LaneLoad(free=8, threads=8, ready=0, mean_run_s=None)
    full = runtime.LaneLoad(free=0, threads=75, ready=0, mean_run_s=8.0)
    assert runtime.round_size([cpu, full], horizon_s=0.5, left=10_000, max_round=1000) == 8 + 2 + 5
    waiting = runtime.LaneLoad(free=0, threads=75, ready=15, mean_run_s=8.0)
    assert runtime.round_size([cpu, waiting], horizon_s=0.5, left=10_000, max_round=1000) == 0


def test_the_first_round_is_sized_by_the_pace_remembered():
    base = dict(horizon_s=0.5, left=1000, max_round=1000)
    # nothing remembered: the free threads plus a small prefetch, as an unmeasured round
    assert runtime.first_round_size(one_lane(8, 8, 0, None), None, **base) == 10
    # a process whose last call ran quick jobs claims a call's 1,000 in one round
    assert runtime.first_round_size(one_lane(8, 8, 0, None), 0.0001, **base) == 1000
    # slower jobs, smaller first rounds
    assert runtime.first_round_size(one_lane(8, 8, 0, None), 0.2, **base) == 8 + 20
    assert runtime.first_round_size(one_lane(8, 8, 0, None), 2.5, **base) == 10
    # never past the call's limit
    assert runtime.first_round_size(one_lane(8, 8, 0, None), 0.0001, horizon_s=0.5, left=7, max_round=1000) == 7


@given(lanes=st.lists(st.builds(runtime.LaneLoad, free=st.integers(0, 300), threads=st.integers(1, 300),
                                ready=st.integers(0, 2000),
                                mean_run_s=st.one_of(st.none(), st.floats(min_value=0, max_value=600))),
                      min_size=1, max_size=4),
       left=st.integers(0, 10**6), max_round=st.integers(1, 1000))
def test_round_size_bounds(lanes, left, max_round):
    size = runtime.round_size(lanes, horizon_s=0.5, left=left, max_round=max_round)
    assert 0 <= size <= min(left, max_round)
    idle = sum(max(0, lane.free - lane.ready) for lane in lanes)
    queued = sum(max(0, lane.ready - lane.free) for lane in lanes)
    if idle > queued and left > 0:
        assert size >= min(idle - queued, left, max_round)  # threads that would idle get jobs
    ahead = sum(runtime.prefetch(lane, 0.5) for lane in lanes)
    assert size <= sum(lane.free for lane in lanes) + ahead  # never more than the threads and their prefetch


def test_sample_run_times_keeps_small_batches_and_samples_big_ones():
    assert runtime.sample_run_times([1.0, 2.0]) == [1.0, 2.0]
    chosen = runtime.sample_run_times([float(i) for i in range(1000)], rng=random.Random(1))
    assert len(chosen) == runtime.SAMPLES_PER_FLUSH and len(set(chosen)) == runtime.SAMPLES_PER_FLUSH
