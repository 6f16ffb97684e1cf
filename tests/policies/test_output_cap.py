"""The output cap estimator (jobprocessor/policies/output_cap.py): pure, with hypothesis properties."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from jobprocessor.policies import output_cap as oc
from jobprocessor.policies.output_cap import OutputStats

# answer sizes of one scale per history (drawn per example), so percentiles land anywhere from tens to thousands
scales = st.sampled_from([50, 300, 1000, 3000, 20_000])
histories = scales.flatmap(lambda hi: st.one_of(st.lists(st.integers(0, hi), max_size=30),
                                                st.lists(st.integers(0, hi), min_size=20, max_size=150)))
max_outputs = st.integers(16, 100_000)


def stats_of(history, cut_offs=()) -> OutputStats:
    stats = OutputStats()
    for i, tokens in enumerate(history):
        stats = oc.observe(stats, tokens, cut_off=i in cut_offs)
    return stats


def test_no_data_means_the_upper_bound_and_data_brings_the_cap_near_the_answers():
    assert oc.output_cap(OutputStats(), 4096) == 4096
    assert oc.output_cap(stats_of([300] * (oc.MIN_ANSWERS - 1)), 4096) == 4096
    stats = stats_of([300] * oc.MIN_ANSWERS)
    assert oc.percentile_tokens(stats) == oc.bin_top(oc.bin_of(300)) == 305
    assert oc.output_cap(stats, 4096) == math.ceil(305 * oc.MARGIN) == 366
    assert oc.output_cap(stats_of([10] * 50), 4096) == oc.MIN_CAP  # the floor
    assert oc.output_cap(stats_of([10] * 50), 100) == 100  # ... never above the upper bound
    assert oc.output_cap(stats_of([9000] * 50), 4096) == 4096


def test_p99_is_about_the_fifth_largest_of_the_last_five_hundred():
    history = [200] * 495 + [1000] * 5
    assert oc.percentile_tokens(stats_of(history)) == oc.bin_top(oc.bin_of(1000))
    # one outlier in a full window stays out of the percentile
    assert oc.percentile_tokens(stats_of([200] * 499 + [1000])) == oc.bin_top(oc.bin_of(200))


@given(st.integers(0, 10_000_000))
def test_bins_hold_their_answers_and_err_at_most_a_ninth_high(tokens):
    index = oc.bin_of(tokens)
    assert oc.bin_top(index) >= tokens or index == oc.MAX_BIN
    assert index == 0 or oc.bin_top(index - 1) < tokens
    if tokens > oc.FIRST_EDGE:
        assert oc.bin_top(index) <= tokens * 2 ** (1 / oc.BINS_PER_OCTAVE) + 1


@given(histories, max_outputs)
def test_bounded(history, max_output):
    cap = oc.output_cap(stats_of(history), max_output)
    assert min(oc.MIN_CAP, max_output) <= cap <= max_output


@settings(max_examples=300)
@given(scales.flatmap(lambda hi: st.lists(st.tuples(st.integers(0, hi), st.integers(0, hi)),
                                          min_size=oc.MIN_ANSWERS - 1, max_size=150)), max_outputs)
def test_monotone_in_the_answers(pairs, max_output):
    """Answers at least as large, one for one, never give a smaller cap."""
    smaller = [a for a, _ in pairs]
    larger = [a + extra for a, extra in pairs]
    assert oc.output_cap(stats_of(smaller), max_output) <= oc.output_cap(stats_of(larger), max_output)


@given(scales.flatmap(lambda hi: st.lists(st.integers(0, hi), min_size=oc.MIN_ANSWERS, max_size=150)),
       st.integers(0, 30_000), max_outputs)
def test_an_answer_at_least_the_percentile_never_lowers_the_cap(history, extra, max_output):
    stats = stats_of(history)
    bigger = oc.observe(stats, oc.percentile_tokens(stats) + extra)
    assert oc.output_cap(bigger, max_output) >= oc.output_cap(stats, max_output)


# a full window (decayed weights never total more than 1 / (1 - DECAY) = WINDOW_ANSWERS), spread as drawn
full_windows = st.lists(st.floats(0.01, 1), min_size=1, max_size=60).map(
    lambda ws: tuple(w * oc.WINDOW_ANSWERS / sum(ws) for w in ws))


@settings(max_examples=30, deadline=None)
@given(full_windows, st.integers(1, 10_000), max_outputs)
def test_decays_after_enough_answers_of_a_new_size(window, size, max_output):
    """Whatever came before, even a full window of answers all larger than the new size: FORGET_ANSWERS answers of
    one size give the cap of that size alone."""
    above = oc.bin_of(size) + 1
    stats = OutputStats((0.0,) * above + window, answers=10**6)
    for _ in range(oc.FORGET_ANSWERS):
        stats = oc.observe(stats, size)
    assert oc.output_cap(stats, max_output) == oc.output_cap(stats_of([size] * oc.MIN_ANSWERS), max_output)
    assert len(stats.weights) <= oc.MAX_BIN + 1


@given(st.lists(st.integers(0, 2000), min_size=oc.MIN_ANSWERS, max_size=99), st.integers(16, 4000), max_outputs)
def test_a_cut_off_lifts_the_cap_above_it_while_answers_are_few(history, cap, max_output):
    """A cut-off counts at its cap; with fewer than a hundred answers that is 1 % of them: the cap grows past it."""
    stats = oc.observe(stats_of(history), cap, cut_off=True)
    assert stats.cut_offs == 1
    assert oc.output_cap(stats, max_output) >= min(max_output, cap + 1)


def test_cut_offs_above_one_percent_lift_a_full_window():
    stats = stats_of([300] * 1000)
    before = oc.output_cap(stats, 4096)
    for _ in range(10):  # 10 of the last ~500
        stats = oc.observe(stats, before, cut_off=True)
        stats = oc.observe(stats, 300)
    assert oc.output_cap(stats, 4096) > before


@given(st.integers(1, 100_000), st.integers(1, 100_000), max_outputs)
def test_retry_cap_grows_and_stops_at_the_upper_bound(previous, shared, max_output):
    nxt = oc.retry_cap(previous, shared, max_output)
    if previous >= max_output:
        assert nxt is None
    else:
        assert previous < nxt <= max_output and (nxt == max_output or nxt >= 2 * previous)


def test_retries_reach_the_upper_bound_in_a_few_steps():
    caps, cap = [], oc.MIN_CAP
    while cap is not None:
        caps.append(cap)
        cap = oc.retry_cap(cap, 0, 4096)
    assert caps == [256, 512, 1024, 2048, 4096]
