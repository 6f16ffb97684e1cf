import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobprocessor.policies.backoff import BASE_S, CAP_S, JITTER, retry_delay


def test_documented_sequence():
    # u=0: the full exponential ceiling; u->1: half of it
    assert [retry_delay(n, 0.0) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert retry_delay(1, 0.999999) == pytest.approx(5.0, rel=1e-4)
    assert retry_delay(30, 0.0) == CAP_S


@given(attempts=st.integers(min_value=1, max_value=10_000), u=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_delay_is_within_jittered_ceiling(attempts, u):
    ceiling = min(CAP_S, BASE_S * 2 ** min(attempts - 1, 62))
    delay = retry_delay(attempts, u)
    assert ceiling * (1 - JITTER) <= delay <= ceiling
    assert 0 < delay <= CAP_S


@given(attempts=st.integers(min_value=1, max_value=200), u=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_ceiling_never_shrinks_with_more_attempts(attempts, u):
    assert retry_delay(attempts + 1, u) >= retry_delay(attempts, u)


def test_jitter_spreads_delays():
    delays = {round(retry_delay(3), 6) for _ in range(50)}
    assert len(delays) > 10
