from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from jobprocessor.policies.deferral import exceeded

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_count_bound():
    assert exceeded(0, None, NOW, max_count=3, max_s=3600) is None
    assert exceeded(2, NOW, NOW, max_count=3, max_s=3600) is None  # the third deferral is allowed
    reason = exceeded(3, NOW, NOW, max_count=3, max_s=3600)
    assert reason is not None and "deferred 4 times" in reason and "JOBS_MAX_DEFERRALS=3" in reason


def test_time_bound():
    first = NOW - timedelta(hours=2)
    reason = exceeded(1, first, NOW, max_count=100, max_s=3600)
    assert reason is not None and "7200s" in reason and "JOBS_MAX_DEFERRAL_S=3600" in reason
    assert exceeded(1, NOW - timedelta(minutes=59), NOW, max_count=100, max_s=3600) is None


@given(before=st.integers(0, 10_000), count=st.integers(1, 10_000), waited=st.integers(0, 10**7),
       max_s=st.integers(1, 10**7))  # whole seconds: timedelta keeps microseconds only
def test_bound_is_exactly_count_or_time(before, count, waited, max_s):
    first = NOW - timedelta(seconds=waited) if before else None
    reason = exceeded(before, first, NOW, max_count=count, max_s=max_s)
    expected = before + 1 > count or (first is not None and waited > max_s)
    assert (reason is not None) == expected
