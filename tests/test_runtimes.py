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
