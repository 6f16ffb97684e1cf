"""The 5-field cron-expression parser of the schedules (jobprocessor.policies.cron_expr): pure, no database."""
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobprocessor.policies.cron_expr import Cron, CronError

UTC = timezone.utc


def at(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("expression, after, expected", [
    ("0 3 * * *", at(2026, 1, 1, 2, 59), at(2026, 1, 1, 3, 0)),
    ("0 3 * * *", at(2026, 1, 1, 3, 0), at(2026, 1, 2, 3, 0)),  # strictly after
    ("0 3 * * *", at(2026, 12, 31, 3, 0, 30), at(2027, 1, 1, 3, 0)),
    ("*/15 * * * *", at(2026, 5, 5, 10, 7, 59), at(2026, 5, 5, 10, 15)),
    ("*/15 * * * *", at(2026, 5, 5, 10, 45), at(2026, 5, 5, 11, 0)),
    ("30 9 * * mon-fri", at(2026, 11, 27, 10, 0), at(2026, 11, 30, 9, 30)),  # Fri after 9:30 -> Monday
    ("0 0 * * 7", at(2026, 11, 24, 0, 0), at(2026, 11, 29, 0, 0)),  # 7 is Sunday
    ("0 0 * * sun", at(2026, 11, 24, 0, 0), at(2026, 11, 29, 0, 0)),
    ("0 0 29 2 *", at(2026, 3, 1), at(2028, 2, 29)),
    ("0 12 1 jan,jul *", at(2026, 2, 1), at(2026, 7, 1, 12, 0)),
    ("5-10/5 1 * * *", at(2026, 1, 1, 1, 5), at(2026, 1, 1, 1, 10)),
    ("10/20 * * * *", at(2026, 1, 1, 1, 31), at(2026, 1, 1, 1, 50)),
    # day-of-month and day-of-week both restricted: either matches (Vixie cron)
    ("0 0 13 * fri", at(2026, 11, 1), at(2026, 11, 6)),  # Friday the 6th comes before the 13th
    ("@daily", at(2026, 1, 1, 0, 0), at(2026, 1, 2, 0, 0)),
    ("@hourly", at(2026, 1, 1, 0, 0, 1), at(2026, 1, 1, 1, 0)),
])
def test_next_after(expression, after, expected):
    assert Cron.parse(expression).next_after(after) == expected


def test_naive_moment_is_utc_and_other_zones_convert():
    cron = Cron.parse("0 3 * * *")
    assert cron.next_after(datetime(2026, 1, 1, 2, 0)) == at(2026, 1, 1, 3, 0)
    plus_two = timezone(timedelta(hours=2))
    assert cron.next_after(datetime(2026, 1, 1, 4, 30, tzinfo=plus_two)) == at(2026, 1, 1, 3, 0)


@pytest.mark.parametrize("expression, fragment", [
    ("", "has 0 fields"), ("* * * *", "has 4 fields"), ("* * * * * *", "has 6 fields"),
    ("60 * * * *", "minute: 60 is outside 0-59"), ("* 24 * * *", "hour: 24"), ("* * 0 * *", "day-of-month: 0"),
    ("* * * 13 *", "month: 13"), ("* * * * 8", "day-of-week: 8"), ("*/0 * * * *", "step"),
    ("5-1 * * * *", "backwards"), ("a * * * *", "not a number"), ("1,,2 * * * *", "empty item"),
    ("0 0 31 2 *", "never matches"), ("* * * foo *", "not a number or a name"),
    # digits that are not ASCII: str.isdigit() says yes, int() says no (or reads another number)
    ("\u00b2 * * * *", "minute: '\u00b2' is not a number"), ("*/\u00b2 * * * *", "step"),
    ("\u0661 * * * *", "not a number"), ("0 \uff11 * * *", "hour: '\uff11' is not a number"),
])
def test_invalid_expressions_say_why(expression, fragment):
    with pytest.raises(CronError, match=fragment):
        Cron.parse(expression)


def _brute_force_next(cron: Cron, after: datetime) -> datetime:
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(60 * 24 * 400):
        if (moment.minute in cron.minutes and moment.hour in cron.hours and cron._day_matches(moment)):
            return moment
        moment += timedelta(minutes=1)
    raise AssertionError("no match within 400 days")


field = st.one_of(st.just("*"), st.integers(0, 5).map(str), st.integers(1, 7).map(lambda s: f"*/{s}"))
minute_field = st.one_of(field, st.integers(0, 59).map(str), st.tuples(st.integers(0, 29), st.integers(30, 59))
                         .map(lambda t: f"{t[0]}-{t[1]}"))
hour_field = st.one_of(st.just("*"), st.integers(0, 23).map(str),
                       st.lists(st.integers(0, 23), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))))
dom_field = st.one_of(st.just("*"), st.integers(1, 28).map(str), st.just("1-15"))
month_field = st.one_of(st.just("*"), st.integers(1, 12).map(str), st.just("jan-jun"))
dow_field = st.one_of(st.just("*"), st.integers(0, 7).map(str), st.just("mon-fri"))


@settings(max_examples=60, deadline=None)
@given(minute_field, hour_field, dom_field, month_field, dow_field,
       st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)))
def test_next_after_agrees_with_minute_by_minute_search(minute, hour, dom, month, dow, after):
    cron = Cron.parse(f"{minute} {hour} {dom} {month} {dow}")
    after = after.replace(tzinfo=UTC)
    found = cron.next_after(after)
    assert found > after and found.second == 0
    assert found == _brute_force_next(cron, after)
