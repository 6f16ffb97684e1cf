"""The runtime book's cached estimates (jobprocessor/runtimes.py): never below a fresh estimate of the same samples,
so caching never lets the start rule start a job a fresh estimate would hold back. No database: the book touches
its engine only to load and save shared samples."""
from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st

from jobprocessor.policies import runtime
from jobprocessor.runtimes import RuntimeBook

TYPE = "t.x"
runs = st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=1, max_size=150)


def fresh(book: RuntimeBook, timeout_s: float) -> runtime.Estimate:
    return runtime.estimate(book._samples.get(TYPE, ()), timeout_s, book.budget_s)


@given(runs, st.lists(st.booleans(), min_size=150, max_size=150))
@hsettings(max_examples=200, deadline=None)
def test_a_cached_estimate_is_never_below_a_fresh_one(durations, asks):
    book = RuntimeBook(engine=None, budget_s=60.0)
    for seconds, ask in zip(durations, asks):
        book.observe(TYPE, seconds)
        if ask:  # estimates read between runs fill the cache
            book.estimate(TYPE, 30.0)
        cached, now = book.estimate(TYPE, 30.0), fresh(book, 30.0)
        assert cached.high_s >= now.high_s and cached.measured == now.measured


def test_a_run_longer_than_the_estimate_counts_at_once():
    book = RuntimeBook(engine=None, budget_s=60.0)
    for _ in range(5):
        book.observe(TYPE, 0.01)
    assert book.estimate(TYPE, 30.0).high_s < 0.05
    for _ in range(5):
        book.observe(TYPE, 2.0)
    assert book.estimate(TYPE, 30.0).high_s >= 2.0  # within the same REFRESH_S


def test_until_measured_the_estimate_is_the_timeout_capped_at_half_the_budget():
    book = RuntimeBook(engine=None, budget_s=10.0)
    assert book.estimate(TYPE, 30.0) == runtime.Estimate(high_s=5.0, mean_s=None, measured=False)
    book.observe(TYPE, 0.1)
    book.observe(TYPE, 0.1)
    assert not book.estimate(TYPE, 30.0).measured
    book.observe(TYPE, 0.1)
    assert book.estimate(TYPE, 30.0).measured and book.mean(TYPE) is not None


@given(runs, st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=40))
@hsettings(max_examples=150, deadline=None)
def test_observing_a_run_of_jobs_at_once_is_observing_each(durations, cuts):
    one_by_one, at_once = RuntimeBook(engine=None, budget_s=60.0), RuntimeBook(engine=None, budget_s=60.0)
    i = 0
    for cut in cuts:  # runs of jobs of `cut` jobs, an estimate read between them (the cache filled)
        batch, i = durations[i:i + cut], i + cut
        for seconds in batch:
            one_by_one.observe(TYPE, seconds)
        at_once.observe_many(TYPE, batch)
        assert at_once.estimate(TYPE, 30.0) == one_by_one.estimate(TYPE, 30.0)
        assert at_once.mean(TYPE) == one_by_one.mean(TYPE)
    assert at_once._samples == one_by_one._samples and at_once._runs == one_by_one._runs
    assert at_once._unsaved == one_by_one._unsaved


def test_only_runs_within_the_cached_percentile_may_wait_to_be_observed():
    book = RuntimeBook(engine=None, budget_s=60.0)
    assert book.changes_estimate(TYPE, 0.01)  # nothing cached
    book.observe(TYPE, 0.01)
    book.estimate(TYPE, 30.0)
    assert book.changes_estimate(TYPE, 0.01)  # not measured yet: each run counts at once
    for _ in range(5):
        book.observe(TYPE, 0.01)
    high = book.estimate(TYPE, 30.0).high_s
    assert not book.changes_estimate(TYPE, 0.01)
    assert book.changes_estimate(TYPE, high)  # longer than the percentile the estimate holds
