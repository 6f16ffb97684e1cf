"""The shared limiter's pure core: refill, reserve, settle and learn from the server. No database, no clock.

Each dimension (requests, tokens) is a token bucket refilled continuously at limit/60 per second, kept in GCRA
form: the time `free_at` at which the bucket will be full again. A bucket whose `free_at` is in the past is full;
one whose `free_at` is in the future holds `capacity - (free_at - now) * rate` units, which may be negative: those
units are promised to callers already given a later start time.

Why a small burst: OpenAI enforces a per-minute limit over shorter periods too ("450 RPM" may be enforced as 7.5
per second), so the bucket holds only BURST_S seconds of budget. Sending at the steady rate from a near-empty
bucket is what keeps every process and instance together under the limit with no 429, and still uses the whole
budget: a minute with demand sends `rpm` requests, plus at most one burst.

A reservation is granted now or at a start time in the near future (the caller sleeps until then, with no lock
held); if that start time is further away than the caller can wait, nothing is reserved and the caller learns when
the budget refills.

What a call is charged is what OpenAI counts: when it arrives, the larger of its output cap and its input estimate
(policies/tokens.py), and nothing back when the answer is shorter. So a settlement gives nothing back for a call
that reached the server, whatever its usage: the starts in any interval, and the tokens they were charged, stay
within one bucket plus the rate times the interval, exactly as the server counts them. Only a call that never
reached the server (no connection) gets its request and its tokens back; the server never saw it. The usage is
recorded for the stats, beside what was charged (tests/ratelimit/test_core.py states these as properties).
The server's x-ratelimit-* headers and Retry-After can only make the limiter more careful, never less.

All times are seconds on one clock (the database's, so that every host agrees).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..policies import openai_errors

WINDOW_S = 60  # the stats window: requests and tokens used over the last minute
BURST_S = 1.0  # bucket capacity, in seconds of budget (see the module docstring)


@dataclass(frozen=True)
class Limits:
    rpm: int
    tpm: int
    burst_s: float = BURST_S

    def __post_init__(self) -> None:
        if not (self.rpm >= 1 and self.tpm >= 1 and self.burst_s > 0):
            raise ValueError("rpm and tpm must be at least 1 and burst_s positive")

    @property
    def request_rate(self) -> float:
        return self.rpm / 60.0

    @property
    def token_rate(self) -> float:
        return self.tpm / 60.0

    @property
    def request_capacity(self) -> float:
        return max(1.0, self.request_rate * self.burst_s)

    @property
    def token_capacity(self) -> float:
        return max(1.0, self.token_rate * self.burst_s)

    def fits(self, tokens: int) -> bool:
        """A call that needs more tokens than a whole minute's budget can never be served (the server would refuse
        it too): the caller should fail it instead of waiting forever."""
        return tokens <= self.tpm


@dataclass(frozen=True)
class State:
    request_free_at: float
    token_free_at: float
    hold_until: float
    window_second: int
    window_requests: tuple = ()
    window_tokens: tuple = ()  # usage (the answers' total_tokens) per second
    window_charged: tuple = ()  # tokens charged per second: what the server counts against tokens/min
    reserved_requests: int = 0
    reserved_tokens: int = 0
    settled_requests: int = 0
    settled_reserved_tokens: int = 0
    sent_requests: int = 0
    used_tokens: int = 0
    throttled: int = 0
    error_streak: int = 0
    server_remaining_requests: Optional[int] = None
    server_remaining_tokens: Optional[int] = None
    server_seen_at: Optional[float] = None
    updated_at: float = 0.0


@dataclass(frozen=True)
class Reservation:
    """What a granted reservation took, and the totals just before it (to tell later grants apart at settle)."""

    tokens: int
    requests_before: int
    tokens_before: int


@dataclass(frozen=True)
class Decision:
    granted: bool
    wait_s: float  # granted: sleep this long, then call. Denied: the budget for this call refills in wait_s.
    reservation: Optional[Reservation] = None


@dataclass(frozen=True)
class ServerView:
    """What the server said about its own budget (None: not said). See ratelimit/headers.py."""

    limit_requests: Optional[int] = None
    limit_tokens: Optional[int] = None
    remaining_requests: Optional[int] = None
    remaining_tokens: Optional[int] = None
    reset_requests_s: Optional[float] = None
    reset_tokens_s: Optional[float] = None
    retry_after_s: Optional[float] = None


@dataclass(frozen=True)
class Settlement:
    """How a reserved call ended. sent: the request reached the server (False only when it never connected: then
    its request and tokens are given back); used_tokens: the response's usage.total_tokens, for the stats only
    (None when unknown: the charge is recorded as the usage)."""

    sent: bool
    used_tokens: Optional[int] = None
    throttled: bool = False  # 429
    server_error: bool = False  # 5xx
    succeeded: bool = False  # 2xx
    view: Optional[ServerView] = None


def new_state(now: float) -> State:
    """Full buckets, empty window."""
    return State(request_free_at=now, token_free_at=now, hold_until=now, window_second=int(now),
                 window_requests=(0,) * WINDOW_S, window_tokens=(0,) * WINDOW_S, window_charged=(0,) * WINDOW_S,
                 updated_at=now)


def available(free_at: float, now: float, rate: float, capacity: float) -> float:
    """Units in the bucket at `now` (negative: promised to callers with a later start time)."""
    return capacity - max(0.0, free_at - now) * rate


def _free_at_for(level: float, now: float, rate: float, capacity: float) -> float:
    """The `free_at` that puts `level` units in the bucket at `now`."""
    return now + (capacity - level) / rate


def _give_back(free_at: float, now: float, seconds: float) -> float:
    """Move the bucket `seconds` of budget towards full (negative: further into debt); never past full."""
    return max(now, max(free_at, now) - seconds)


def _clock(state: State, now: float) -> float:
    # the row remembers the latest time it was written at; a reader whose clock was read a little earlier (it
    # waited for the row lock) works at that time, so time never runs backwards for the buckets
    return max(now, state.updated_at)


# --- the stats window ----------------------------------------------------------------------------------------------

def _ring(values: tuple) -> tuple:
    return tuple(values) if len(values) == WINDOW_S else (0,) * WINDOW_S


def advance_window(second: int, *rings: tuple, now_second: int) -> tuple:
    """Shift per-second rings so that their newest slot is `now_second` (slots that fell out are dropped).
    Returns (second, ring, ring, ...)."""
    rings = tuple(_ring(values) for values in rings)
    shift = now_second - second
    if shift <= 0:
        return (second, *rings)
    if shift >= WINDOW_S:
        return (now_second, *((0,) * WINDOW_S for _ in rings))
    return (now_second, *(values[shift:] + (0,) * shift for values in rings))


def _record(state: State, now: float, requests: int, tokens: int, charged: int) -> State:
    second, reqs, toks, charges = advance_window(state.window_second, state.window_requests, state.window_tokens,
                                                 state.window_charged, now_second=int(now))
    return replace(state, window_second=second, window_requests=reqs[:-1] + (reqs[-1] + requests,),
                   window_tokens=toks[:-1] + (toks[-1] + tokens,),
                   window_charged=charges[:-1] + (charges[-1] + charged,))


# --- reserve / settle / learn -------------------------------------------------------------------------------------

def start_time(state: State, limits: Limits, now: float, tokens: int) -> float:
    """The earliest time a call needing one request and `tokens` tokens may start."""
    token_need = min(float(tokens), limits.token_capacity)  # a call bigger than the bucket waits for a full one
    return max(now, state.hold_until,
               state.request_free_at - (limits.request_capacity - 1.0) / limits.request_rate,
               state.token_free_at - (limits.token_capacity - token_need) / limits.token_rate)


def reserve(state: State, limits: Limits, now: float, tokens: int, max_wait_s: float) -> tuple[State, Decision]:
    """Reserve one request and `tokens` tokens, starting within `max_wait_s`; or reserve nothing and say when."""
    now = _clock(state, now)
    tokens = max(0, int(tokens))
    start = start_time(state, limits, now, tokens)
    wait = start - now
    if wait > max_wait_s:
        return replace(state, updated_at=now), Decision(False, wait)
    reservation = Reservation(tokens, state.reserved_requests, state.reserved_tokens)
    state = replace(
        state,
        request_free_at=max(state.request_free_at, start) + 1.0 / limits.request_rate,
        token_free_at=max(state.token_free_at, start) + tokens / limits.token_rate,
        reserved_requests=state.reserved_requests + 1,
        reserved_tokens=state.reserved_tokens + tokens,
        updated_at=now,
    )
    return state, Decision(True, wait, reservation)


def settle(state: State, limits: Limits, now: float, reservation: Reservation, outcome: Settlement) -> State:
    """Account for a finished call: a call that reached the server keeps its whole charge (the server gives nothing
    back); one that never reached it gets its request and tokens back. Record the usage and the charge in the
    window, then learn from what the server said."""
    now = _clock(state, now)
    used = reservation.tokens if outcome.used_tokens is None else max(0, int(outcome.used_tokens))
    unsent_requests, unsent_tokens = (0, 0) if outcome.sent else (1, reservation.tokens)
    state = replace(
        state,
        request_free_at=_give_back(state.request_free_at, now, unsent_requests / limits.request_rate),
        token_free_at=_give_back(state.token_free_at, now, unsent_tokens / limits.token_rate),
        settled_requests=state.settled_requests + 1,
        settled_reserved_tokens=state.settled_reserved_tokens + reservation.tokens,
        sent_requests=state.sent_requests + (1 if outcome.sent else 0),
        used_tokens=state.used_tokens + used,
        throttled=state.throttled + (1 if outcome.throttled else 0),
        error_streak=0 if outcome.succeeded else state.error_streak + (1 if outcome.server_error else 0),
        updated_at=now,
    )
    state = _record(state, now, 1 if outcome.sent else 0, used, reservation.tokens if outcome.sent else 0)
    if outcome.throttled:
        state = _throttled(state, limits, now, outcome.view)
    if outcome.view is not None:
        state = observe(state, limits, now, outcome.view, need_tokens=max(1, reservation.tokens),
                        later_requests=state.reserved_requests - reservation.requests_before - 1,
                        later_tokens=state.reserved_tokens - reservation.tokens_before - reservation.tokens)
    return state


def _throttled(state: State, limits: Limits, now: float, view: Optional[ServerView]) -> State:
    """A 429: nobody starts before the server's Retry-After, and both buckets are at most empty."""
    retry_after = view.retry_after_s if view is not None and view.retry_after_s is not None else None
    hold = now + (retry_after if retry_after is not None and retry_after >= 0 else openai_errors.THROTTLE_FALLBACK_S)
    return replace(state, hold_until=max(state.hold_until, hold),
                   request_free_at=max(state.request_free_at, _free_at_for(0.0, now, limits.request_rate,
                                                                           limits.request_capacity)),
                   token_free_at=max(state.token_free_at, _free_at_for(0.0, now, limits.token_rate,
                                                                       limits.token_capacity)))


def server_wait_s(remaining: float, need: float, limit: Optional[int], reset_s: Optional[float]) -> Optional[float]:
    """Seconds until the server has `need` units, from its x-ratelimit-remaining/-limit/-reset headers: the server
    refills (limit - remaining) in reset_s seconds. Without the limit, its whole reset time (the safe answer)."""
    if remaining >= need or reset_s is None:
        return None
    if limit is not None and limit > remaining and reset_s > 0:
        return (need - remaining) * reset_s / (limit - remaining)
    return reset_s


def observe(state: State, limits: Limits, now: float, view: ServerView, *, need_tokens: float,
            later_requests: int = 0, later_tokens: int = 0) -> State:
    """Believe the server when it says less remains than we think. `later_*`: what this limiter granted after the
    observed call, which the server may not have counted yet when it answered (so it is subtracted too)."""
    now = _clock(state, now)
    request_free_at, token_free_at, hold = state.request_free_at, state.token_free_at, state.hold_until
    if view.remaining_requests is not None:
        believed = view.remaining_requests - max(0, later_requests)
        if believed < available(request_free_at, now, limits.request_rate, limits.request_capacity):
            request_free_at = _free_at_for(believed, now, limits.request_rate, limits.request_capacity)
        wait = server_wait_s(believed, 1.0, view.limit_requests, view.reset_requests_s)
        if wait is not None:
            hold = max(hold, now + wait)
    if view.remaining_tokens is not None:
        believed = view.remaining_tokens - max(0, later_tokens)
        if believed < available(token_free_at, now, limits.token_rate, limits.token_capacity):
            token_free_at = _free_at_for(believed, now, limits.token_rate, limits.token_capacity)
        wait = server_wait_s(believed, need_tokens, view.limit_tokens, view.reset_tokens_s)
        if wait is not None:
            hold = max(hold, now + wait)
    return replace(state, request_free_at=request_free_at, token_free_at=token_free_at, hold_until=hold,
                   server_remaining_requests=view.remaining_requests if view.remaining_requests is not None
                   else state.server_remaining_requests,
                   server_remaining_tokens=view.remaining_tokens if view.remaining_tokens is not None
                   else state.server_remaining_tokens,
                   server_seen_at=now, updated_at=now)


# --- the caller's side: how long may it wait ---------------------------------------------------------------------

def max_inline_wait(time_left_s: float, max_inline_wait_s: float, min_call_s: float) -> float:
    """How long a job may sleep for its slot: short, and leaving `min_call_s` of its deadline for the call itself.
    Negative: the job has no time left for a call at all."""
    return min(max_inline_wait_s, time_left_s - min_call_s)


# --- stats ----------------------------------------------------------------------------------------------------------

def _pct(used: float, limit: float) -> float:
    return round(100.0 * used / limit, 1) if limit else 0.0


def stats(state: State, limits: Limits, now: float) -> dict:
    """The figures of GET /rate-limiter/stats, /metrics and the per-call log line (waiting jobs: the store adds)."""
    now = _clock(state, now)
    _, reqs, toks, charges = advance_window(state.window_second, state.window_requests, state.window_tokens,
                                            state.window_charged, now_second=int(now))
    used_requests, used_tokens, charged_tokens = sum(reqs), sum(toks), sum(charges)
    next_slot = start_time(state, limits, now, 0) - now
    return {
        "window_s": WINDOW_S,
        "requests_used": used_requests,
        "requests_limit": limits.rpm,
        "requests_utilisation_pct": _pct(used_requests, limits.rpm),
        "tokens_used": used_tokens,
        "tokens_charged": charged_tokens,
        "tokens_limit": limits.tpm,
        "tokens_utilisation_pct": _pct(charged_tokens, limits.tpm),
        "requests_in_flight": state.reserved_requests - state.settled_requests,
        "tokens_in_flight": state.reserved_tokens - state.settled_reserved_tokens,
        "next_slot_s": round(max(0.0, next_slot), 3),
        "hold_s": round(max(0.0, state.hold_until - now), 3),
        "throttled_total": state.throttled,
        "error_streak": state.error_streak,
        "reserved_total": state.reserved_requests,
        "settled_total": state.settled_requests,
        "sent_total": state.sent_requests,
        "used_tokens_total": state.used_tokens,
        "server_remaining_requests": state.server_remaining_requests,
        "server_remaining_tokens": state.server_remaining_tokens,
        "server_seen_s_ago": None if state.server_seen_at is None else round(max(0.0, now - state.server_seen_at), 3),
    }
