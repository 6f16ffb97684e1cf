"""The limiter's pure core, the header parser, the token estimate and the error policy: no database, no network."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobprocessor.policies import openai_errors, tokens
from jobprocessor.ratelimit import core
from jobprocessor.ratelimit.core import Limits, ServerView, Settlement
from jobprocessor.ratelimit.headers import format_duration, parse_duration, parse_retry_after, server_view

T0 = 1_700_000_000.0
EPS = 1e-4  # float time around 1.7e9 s has ~2e-7 s resolution
TIME_ERROR_S = 1e-6  # what a start time computed in a few float steps around T0 may be off by


def grant(state, limits, now, tokens_=10, max_wait=1e9):
    state, decision = core.reserve(state, limits, now, tokens_, max_wait)
    assert decision.granted
    return state, decision


# --- limits --------------------------------------------------------------------------------------------------------

def test_limits_rates_and_burst():
    limits = Limits(rpm=450, tpm=450_000)
    assert limits.request_rate == 7.5 and limits.token_rate == 7500
    assert limits.request_capacity == 7.5 and limits.token_capacity == 7500  # one second of budget
    assert Limits(rpm=6, tpm=60).request_capacity == 1.0  # never below one request
    assert limits.fits(450_000) and not limits.fits(450_001)
    with pytest.raises(ValueError):
        Limits(rpm=0, tpm=10)


# --- reserve ---------------------------------------------------------------------------------------------------------

def test_full_bucket_grants_a_burst_then_paces_at_the_rate():
    limits = Limits(rpm=120, tpm=1_000_000)  # 2/s, burst 2
    state = core.new_state(T0)
    waits = []
    for _ in range(6):
        state, decision = grant(state, limits, T0)
        waits.append(round(decision.wait_s, 6))
    assert waits == [0, 0, 0.5, 1.0, 1.5, 2.0]
    assert state.reserved_requests == 6 and state.reserved_tokens == 60


def test_a_wait_longer_than_allowed_reserves_nothing_and_says_when():
    limits = Limits(rpm=60, tpm=1_000_000)  # 1/s, burst 1
    state = core.new_state(T0)
    state, _ = grant(state, limits, T0)
    before = state
    state, decision = core.reserve(state, limits, T0 + 0.25, 10, max_wait_s=0.5)
    assert not decision.granted and decision.reservation is None
    assert decision.wait_s == pytest.approx(0.75)
    assert (state.request_free_at, state.token_free_at, state.reserved_requests) == \
        (before.request_free_at, before.token_free_at, before.reserved_requests)
    state, decision = core.reserve(state, limits, T0 + 1.0, 10, max_wait_s=0.0)
    assert decision.granted and decision.wait_s == 0


def test_tokens_bound_the_pace_when_calls_are_large():
    limits = Limits(rpm=10_000, tpm=6_000)  # 100 tokens/s, bucket of 100
    state = core.new_state(T0)
    state, first = grant(state, limits, T0, tokens_=100)
    state, second = grant(state, limits, T0, tokens_=50)
    assert first.wait_s == 0 and second.wait_s == pytest.approx(0.5)


def test_a_call_larger_than_the_bucket_waits_for_a_full_bucket_then_runs_into_debt():
    limits = Limits(rpm=10_000, tpm=6_000)  # bucket of 100 tokens
    state = core.new_state(T0)
    state, first = grant(state, limits, T0, tokens_=300)
    assert first.wait_s == 0  # the bucket was full
    state, second = grant(state, limits, T0, tokens_=10)
    assert second.wait_s == pytest.approx(2.1)  # 300 - 100 debt, then 10 more, at 100/s


def test_time_never_runs_backwards():
    limits = Limits(rpm=60, tpm=1_000_000)
    state = core.new_state(T0)
    state, _ = grant(state, limits, T0 + 10)
    state, decision = core.reserve(state, limits, T0 + 9, 1, 100)  # a clock read before the lock was taken
    assert decision.wait_s == pytest.approx(1.0)


def _conforms(events, capacity, rate, extra=lambda a, b: 0.0):
    """events: (start, requests, tokens) sorted by start. For every interval [a, b] of starts, the units started
    in it are at most one bucket plus rate * (b - a) (plus `extra(a, b)`). The times' own rounding allows
    rate * TIME_ERROR_S more: at 1,000 tokens/s, 2.4e-7 s of rounding in b - a is 2.4e-4 tokens, more than EPS (a
    start exactly at the bucket's edge once failed by that much)."""
    for i, (a, _, _) in enumerate(events):
        used = 0.0
        for j in range(i, len(events)):
            b = events[j][0]
            used += events[j][2] if capacity[1] else events[j][1]
            assert used <= capacity[0] + rate * (b - a) + extra(a, b) + EPS + rate * TIME_ERROR_S


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.integers(60, 60_000),
       st.lists(st.tuples(st.floats(0, 3), st.integers(0, 400), st.floats(0, 5), st.floats(0, 3)), min_size=1,
                max_size=80))
def test_starts_in_any_interval_stay_within_one_bucket_plus_the_rate(rpm, tpm, steps):
    """However callers arrive and however long they may wait, and whatever their answers then use: the calls
    started in any interval [a, b], and the tokens they were charged, are at most one bucket plus the rate times
    (b - a). (Calls larger than the bucket are left out here: they wait for a full bucket and then run into debt,
    tested below.)"""
    limits = Limits(rpm=rpm, tpm=tpm)
    state, now, events = core.new_state(T0), T0, []
    for dt, want, max_wait, used_fraction in steps:
        now += dt
        want = min(want, int(limits.token_capacity))
        state, decision = core.reserve(state, limits, now, want, max_wait)
        if decision.granted:
            events.append((now + decision.wait_s, 1, want))
            state = core.settle(state, limits, now, decision.reservation,
                                Settlement(sent=True, used_tokens=int(want * used_fraction)))
    events.sort()
    _conforms(events, (limits.request_capacity, False), limits.request_rate)
    _conforms(events, (limits.token_capacity, True), limits.token_rate)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.integers(60, 60_000),
       st.lists(st.tuples(st.floats(0, 3), st.integers(0, 400), st.floats(0, 1), st.floats(0, 2), st.booleans()),
                min_size=1, max_size=80))
def test_only_calls_that_never_reached_the_server_give_back(rpm, tpm, steps):
    """Calls that start at once and settle later, most for less than they were charged (as OpenAI, nothing comes
    back for them), some never sent (no connection: request and tokens come back, the server never saw them). The
    tokens charged by SENT calls in any [a, b] are within one bucket plus the rate times (b - a) plus what unsent
    calls gave back in [a, b]: budget the server never counted, since those calls never arrived. Requests likewise.
    With no unsent call, both conform strictly whatever the usage (the server's rule, exactly)."""
    limits = Limits(rpm=rpm, tpm=tpm)
    state, now, events, give_backs, pending = core.new_state(T0), T0, [], [], []
    for dt, want, used_fraction, latency, sent in steps:
        now += dt
        for item in sorted((p for p in pending if p[0] <= now), key=lambda p: p[0]):
            at, reservation, used, was_sent = item
            state = core.settle(state, limits, at, reservation,
                                Settlement(sent=was_sent, used_tokens=used if was_sent else 0))
            if not was_sent:
                give_backs.append((at, 1, reservation.tokens))
            pending.remove(item)
        want = min(want, int(limits.token_capacity))
        state, decision = core.reserve(state, limits, now, want, 0.0)
        if decision.granted:
            if sent:
                events.append((now, 1, want))
            pending.append((now + latency, decision.reservation, int(want * used_fraction), sent))
    events.sort()
    _conforms(events, (limits.request_capacity, False), limits.request_rate,
              extra=lambda a, b: sum(r for t, r, _ in give_backs if a <= t <= b))
    _conforms(events, (limits.token_capacity, True), limits.token_rate,
              extra=lambda a, b: sum(k for t, _, k in give_backs if a <= t <= b))


@given(st.integers(0, 400), st.one_of(st.none(), st.integers(0, 100_000)), st.floats(0, 10))
def test_a_sent_call_keeps_its_whole_charge_whatever_it_used(charge, used, later):
    limits = Limits(rpm=600, tpm=60_000)
    state, decision = grant(core.new_state(T0), limits, T0, tokens_=charge)
    at = T0 + later
    settled = core.settle(state, limits, at, decision.reservation, Settlement(sent=True, used_tokens=used))
    for free_at, rate, capacity in (("token_free_at", limits.token_rate, limits.token_capacity),
                                    ("request_free_at", limits.request_rate, limits.request_capacity)):
        assert core.available(getattr(settled, free_at), at, rate, capacity) == \
            pytest.approx(core.available(getattr(state, free_at), at, rate, capacity))
    assert settled.used_tokens == (charge if used is None else used)
    assert sum(settled.window_charged) == charge and sum(settled.window_tokens) == settled.used_tokens


# --- settle ---------------------------------------------------------------------------------------------------------

def test_settle_keeps_the_charge_whatever_the_answer_used():
    limits = Limits(rpm=10_000, tpm=6_000)  # 100 tokens/s
    state = core.new_state(T0)
    state, d1 = grant(state, limits, T0, tokens_=100)
    short = core.settle(state, limits, T0, d1.reservation, Settlement(sent=True, used_tokens=40))
    long = core.settle(state, limits, T0, d1.reservation, Settlement(sent=True, used_tokens=150))
    for settled in (short, long):  # a 60-token call waits 0.6 s either way: nothing back, nothing more
        assert core.start_time(settled, limits, T0, 60) == pytest.approx(T0 + 0.6, abs=EPS)
        assert (settled.token_free_at, settled.request_free_at) == (state.token_free_at, state.request_free_at)
    assert short.used_tokens == 40 and long.used_tokens == 150
    assert short.settled_requests == 1 and short.settled_reserved_tokens == 100
    figures = core.stats(short, limits, T0)
    assert figures["tokens_used"] == 40 and figures["tokens_charged"] == 100


def test_settle_of_an_unsent_call_gives_the_request_back_and_never_overfills():
    limits = Limits(rpm=60, tpm=60_000)
    state = core.new_state(T0)
    state, d1 = grant(state, limits, T0)
    assert core.start_time(state, limits, T0, 0) == pytest.approx(T0 + 1, abs=EPS)
    state = core.settle(state, limits, T0, d1.reservation, Settlement(sent=False, used_tokens=0))
    assert core.start_time(state, limits, T0, 0) == pytest.approx(T0, abs=EPS)
    assert core.available(state.token_free_at, T0, limits.token_rate, limits.token_capacity) == \
        limits.token_capacity  # the tokens came back too: the server never counted them
    assert state.sent_requests == 0 and state.window_requests[-1] == 0 and state.window_charged[-1] == 0
    # a second give-back cannot push the bucket past full
    state = core.settle(state, limits, T0, d1.reservation, Settlement(sent=False, used_tokens=0))
    assert core.available(state.request_free_at, T0, limits.request_rate, limits.request_capacity) == 1.0


def test_settle_refunds_exactly_an_unsent_call_and_nothing_of_a_sent_one():
    """With both buckets in debt (so a refund is not hidden by the bucket being full), an unsent call moves each
    bucket back by exactly its reservation (1 request, its tokens), and a sent one moves neither, whatever it
    used: the charge stays. A settle that never refunds, or one that refunds the unused tokens of a sent call
    (or charges the overrun), fails here."""
    limits = Limits(rpm=60, tpm=6_000)  # 1 request/s, 100 tokens/s; buckets of 1 request and 100 tokens
    state = core.new_state(T0)
    for _ in range(3):
        state, _ = grant(state, limits, T0, tokens_=100)
    state, mine = grant(state, limits, T0, tokens_=50)
    assert state.request_free_at == pytest.approx(T0 + 4, abs=EPS)
    assert state.token_free_at == pytest.approx(T0 + 3.5, abs=EPS)
    unsent = core.settle(state, limits, T0, mine.reservation, Settlement(sent=False, used_tokens=0))
    assert unsent.request_free_at == pytest.approx(state.request_free_at - 1.0, abs=EPS)
    assert unsent.token_free_at == pytest.approx(state.token_free_at - 0.5, abs=EPS)
    assert core.start_time(unsent, limits, T0, 50) == pytest.approx(T0 + 3, abs=EPS)
    for used in (0, 10, 50, 500, None):
        sent = core.settle(state, limits, T0, mine.reservation, Settlement(sent=True, used_tokens=used))
        assert (sent.request_free_at, sent.token_free_at) == (state.request_free_at, state.token_free_at), used
        assert core.start_time(sent, limits, T0, 50) == pytest.approx(T0 + 4, abs=EPS)
        assert sum(sent.window_charged) == 50 and sent.window_requests[-1] == 1  # its charge, in the window
    assert sum(unsent.window_charged) == 0 and unsent.window_requests[-1] == 0


def test_unknown_usage_counts_the_charge_as_used():
    limits = Limits(rpm=10_000, tpm=6_000)
    state = core.new_state(T0)
    state, d1 = grant(state, limits, T0, tokens_=100)
    settled = core.settle(state, limits, T0, d1.reservation, Settlement(sent=True, used_tokens=None))
    assert settled.token_free_at == state.token_free_at and settled.used_tokens == 100


def test_error_streak_counts_server_errors_and_resets_on_success():
    limits = Limits(rpm=6000, tpm=6_000_000)
    state = core.new_state(T0)
    for _ in range(3):
        state, d = grant(state, limits, T0)
        state = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, server_error=True))
    assert state.error_streak == 3
    state, d = grant(state, limits, T0)
    state = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, used_tokens=5, succeeded=True))
    assert state.error_streak == 0


# --- learning from the server -----------------------------------------------------------------------------------------

def test_a_429_holds_every_caller_until_retry_after_then_resumes_with_one_burst():
    limits = Limits(rpm=120, tpm=1_000_000)  # 2/s, burst 2
    state = core.new_state(T0)
    state, d = grant(state, limits, T0)
    state = core.settle(state, limits, T0 + 0.1, d.reservation,
                        Settlement(sent=True, used_tokens=0, throttled=True, view=ServerView(retry_after_s=5.0)))
    assert state.throttled == 1
    waits = []
    for _ in range(4):
        state, decision = grant(state, limits, T0 + 0.1)
        waits.append(round(decision.wait_s, 6))
    assert waits == [5.0, 5.0, 5.5, 6.0]  # nobody before the hold ends; then a bucket's worth and the pace


def test_a_429_without_retry_after_holds_for_the_fallback():
    limits = Limits(rpm=120, tpm=1_000_000)
    state = core.new_state(T0)
    state, d = grant(state, limits, T0)
    state = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, used_tokens=0, throttled=True))
    assert state.hold_until == pytest.approx(T0 + openai_errors.THROTTLE_FALLBACK_S, abs=EPS)


def test_believe_the_server_when_it_says_less_remains():
    limits = Limits(rpm=600, tpm=600_000)  # 10/s, bucket of 10 requests and 10,000 tokens
    state = core.new_state(T0)
    state, d = grant(state, limits, T0, tokens_=100)
    view = ServerView(remaining_requests=3, remaining_tokens=500, limit_requests=600, limit_tokens=600_000)
    learnt = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, used_tokens=100, view=view))
    assert core.available(learnt.request_free_at, T0, limits.request_rate, limits.request_capacity) == \
        pytest.approx(3)
    assert core.available(learnt.token_free_at, T0, limits.token_rate, limits.token_capacity) == pytest.approx(500)
    assert learnt.server_remaining_requests == 3 and learnt.server_remaining_tokens == 500
    # the server saying more remains than we think changes nothing
    generous = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, used_tokens=100,
                                                                        view=ServerView(remaining_requests=599,
                                                                                        remaining_tokens=599_000)))
    assert generous.request_free_at == state.request_free_at


def test_grants_made_after_the_observed_call_are_subtracted_from_what_the_server_said():
    limits = Limits(rpm=600, tpm=600_000)
    state = core.new_state(T0)
    state, mine = grant(state, limits, T0, tokens_=10)
    for _ in range(4):  # four more calls granted while mine was in flight
        state, _ = grant(state, limits, T0, tokens_=10)
    learnt = core.settle(state, limits, T0, mine.reservation,
                         Settlement(sent=True, used_tokens=10, view=ServerView(remaining_requests=2)))
    assert core.available(learnt.request_free_at, T0, limits.request_rate, limits.request_capacity) == \
        pytest.approx(-2)


def test_an_exhausted_server_holds_callers_by_its_reset_headers():
    limits = Limits(rpm=600, tpm=600_000)  # we think 10/s
    state = core.new_state(T0)
    state, d = grant(state, limits, T0)
    # the server's own limit is lower: 60/min, nothing left, full again in 30 s -> one request back in 0.5 s
    view = ServerView(limit_requests=60, remaining_requests=0, reset_requests_s=30.0)
    learnt = core.settle(state, limits, T0, d.reservation, Settlement(sent=True, used_tokens=1, view=view))
    assert learnt.hold_until == pytest.approx(T0 + 0.5, abs=EPS)
    # without the limit header, the whole reset time is the safe answer
    assert core.server_wait_s(0, 1, None, 30.0) == 30.0
    assert core.server_wait_s(5, 1, 60, 30.0) is None
    assert core.server_wait_s(100, 400, 1000, 9.0) == pytest.approx(300 * 9.0 / 900)


# --- the window and the stats -----------------------------------------------------------------------------------------

def test_window_counts_the_last_minute_only():
    limits = Limits(rpm=600, tpm=600_000)
    state = core.new_state(T0)
    for second in (0, 10, 59):
        state, d = grant(state, limits, T0 + second, tokens_=1000)
        state = core.settle(state, limits, T0 + second, d.reservation, Settlement(sent=True, used_tokens=100))
    figures = core.stats(state, limits, T0 + 59.5)
    assert (figures["requests_used"], figures["tokens_used"], figures["tokens_charged"]) == (3, 300, 3000)
    # utilisation of the token limit is what it counts: the charges
    assert figures["requests_utilisation_pct"] == 0.5 and figures["tokens_utilisation_pct"] == 0.5
    assert core.stats(state, limits, T0 + 60.5)["requests_used"] == 2  # second 0 fell out
    assert core.stats(state, limits, T0 + 200)["requests_used"] == 0
    assert figures["requests_in_flight"] == 0 and figures["reserved_total"] == 3 == figures["settled_total"]


def test_advance_window_shifts_and_clears():
    ring = tuple(range(60))
    second, reqs, toks, charges = core.advance_window(100, ring, ring, ring, now_second=103)
    assert second == 103 and reqs[:57] == ring[3:] and reqs[57:] == (0, 0, 0) and charges == reqs
    assert core.advance_window(100, ring, ring, now_second=99) == (100, ring, ring)
    assert core.advance_window(100, (), (), now_second=100)[1] == (0,) * 60  # an empty (new) row reads as zeros
    assert core.advance_window(100, ring, now_second=500) == (500, (0,) * 60)


def test_stats_in_flight_and_hold():
    limits = Limits(rpm=60, tpm=60_000)
    state = core.new_state(T0)
    state, _ = grant(state, limits, T0, tokens_=30)
    figures = core.stats(state, limits, T0)
    assert figures["requests_in_flight"] == 1 and figures["tokens_in_flight"] == 30
    assert figures["next_slot_s"] == pytest.approx(1.0) and figures["hold_s"] == 0


def test_max_inline_wait():
    assert core.max_inline_wait(50, 10, 5) == 10
    assert core.max_inline_wait(12, 10, 5) == 7
    assert core.max_inline_wait(3, 10, 5) < 0


# --- headers ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("4m12.172s", 252.172), ("23h18m29.144s", 83909.144),
    ("0.5", 0.5), ("150us", 0.00015), ("2h", 7200.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "5x", "1s2", "-1s", "-1", "nan", "inf", "9999999h"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


@given(st.floats(0, 86400))
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.001)


def test_retry_after_forms():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after({"retry-after": "20"}, now.timestamp()) == 20
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "20"}, now.timestamp()) == 1.5
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": when}, now.timestamp()) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "tomorrow"}, now.timestamp()) is None
    assert parse_retry_after({}, now.timestamp()) is None


def test_server_view_from_headers():
    headers = {"X-RateLimit-Limit-Requests": "60", "x-ratelimit-limit-tokens": "150000",
               "x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "149984",
               "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s", "content-type": "x"}
    view = server_view(headers, T0)
    assert view == ServerView(60, 150000, 59, 149984, 1.0, 360.0, None)
    assert server_view({"content-type": "application/json"}, T0) is None
    # Azure says -1 for "unknown": never read as a number
    assert server_view({"x-ratelimit-remaining-tokens": "-1", "retry-after": "3"}, T0) == ServerView(retry_after_s=3)


# --- what a call is charged -------------------------------------------------------------------------------------------

RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": {"type": "object"}}}


def test_input_chars_count_roles_contents_and_the_response_format():
    messages = [{"role": "system", "content": "x" * 80}, {"role": "user", "name": "bo",
                                                         "content": [{"type": "text", "text": "yé"}]}]
    assert tokens.input_chars(messages) == 6 + 80 + 4 + 2 + 2
    schema_chars = len('{"type":"json_schema","json_schema":{"name":"p","strict":true,"schema":{"type":"object"}}}')
    assert tokens.input_chars(messages, RESPONSE_FORMAT) == 94 + schema_chars


def test_call_charge_is_the_larger_of_the_cap_and_the_input_estimate():
    messages = [{"role": "user", "content": "x" * 3996}]  # 4000 characters: 1000 tokens
    assert tokens.call_charge(messages, 400) == 1000
    assert tokens.call_charge(messages, 1500) == 1500
    assert tokens.call_charge([{"role": "user", "content": "x" * 3997}], 0) == 1001  # rounded up


@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                        "content": st.text(max_size=400)}), min_size=1, max_size=4),
       st.one_of(st.integers(0, 300), st.integers(0, 5000)), st.booleans())
def test_the_charge_is_what_the_fake_server_counts_for_the_same_request(messages, cap, with_format):
    """tests/support/fake_openai.py implements OpenAI's rule on the request body it receives, independently: the same
    numbers (the input's characters, and the charge), for any text (non-ASCII included: characters, not bytes)."""
    import json

    from tests.support.fake_openai import openai_charge, openai_input_chars

    response_format = RESPONSE_FORMAT if with_format else None
    body = {"model": "m", "messages": messages, "max_completion_tokens": cap}
    if response_format:
        body["response_format"] = response_format
    body = json.loads(json.dumps(body))  # as it arrives: through JSON
    assert tokens.input_chars(messages, response_format) == openai_input_chars(body)
    assert tokens.call_charge(messages, cap, response_format) == openai_charge(body)


# --- the error policy -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, code, kind", [
    (429, "rate_limit_exceeded", openai_errors.THROTTLED), (429, None, openai_errors.THROTTLED),
    (429, "insufficient_quota", openai_errors.RETRY), (500, None, openai_errors.SERVER),
    (503, None, openai_errors.SERVER), (408, None, openai_errors.RETRY), (409, None, openai_errors.RETRY),
    (400, "invalid_value", openai_errors.PERMANENT), (401, "invalid_api_key", openai_errors.PERMANENT),
    (403, None, openai_errors.PERMANENT), (404, "model_not_found", openai_errors.PERMANENT),
    (422, None, openai_errors.PERMANENT),
])
def test_classify_status(status, code, kind):
    assert openai_errors.classify_status(status, code) == kind


def test_throttle_and_server_error_delays():
    assert openai_errors.throttle_delay(10, u=0) == 10 and openai_errors.throttle_delay(10, u=1) == 12
    assert openai_errors.throttle_delay(None, u=0) == openai_errors.THROTTLE_FALLBACK_S
    assert openai_errors.server_error_delay(3, retry_after_s=7) == 7
    delays = [openai_errors.server_error_delay(streak, u=0) for streak in (1, 2, 3, 20)]
    assert delays == [5, 10, 20, openai_errors.SERVER_BACKOFF_CAP_S]
    assert math.isclose(openai_errors.server_error_delay(1, u=1), 2.5)
