"""The limiter's shared store on a real PostgreSQL: atomic under concurrent threads and processes, no lock held
while a caller waits, the wait rows behind `waiting_jobs`, and SharedLimiter's wait-or-reschedule decision."""
from __future__ import annotations

import multiprocessing
import random
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from jobprocessor.config import normalise_database_url
from jobprocessor.handlers import Job, PermanentError, RetryLater
from jobprocessor.ratelimit import LimiterStore, SharedLimiter
from jobprocessor.ratelimit.core import Limits, ServerView, Settlement
from tests.support.limiter_fixtures import fresh_limiter, limiter_row  # noqa: F401 - fixture

SLACK_S = 0.15  # a start time is measured on the host after the commit: up to this late under load


def _job(job_id: int = 1, time_left: float = 60.0) -> Job:
    job = Job(id=job_id, type="product.optimize", payload={}, store_id=None, user_id=None, priority=5, attempts=1,
              max_attempts=5, batch_id=None)
    job.set_deadline(time_left)
    return job


def _assert_paced(starts: list[tuple[float, int]], limits: Limits) -> None:
    """Starts in any [a, b]: at most one bucket plus the rate times (b - a), with SLACK_S of measuring noise."""
    starts.sort()
    for i, (a, _) in enumerate(starts):
        tokens = 0
        for j in range(i, len(starts)):
            b = starts[j][0]
            tokens += starts[j][1]
            assert j - i + 1 <= limits.request_capacity + limits.request_rate * (b - a + SLACK_S) + 1e-6
            assert tokens <= limits.token_capacity + limits.token_rate * (b - a + SLACK_S) + 1e-6


def test_first_use_creates_a_full_idle_limiter(fresh_limiter):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=60, tpm=6000)
    figures = store.stats(limits)
    assert figures["requests_used"] == 0 and figures["next_slot_s"] == 0 and figures["waiting_jobs"] == 0
    assert limiter_row(fresh_limiter) is None  # reading creates nothing
    decision = store.reserve(limits, 50, max_wait_s=0)
    assert decision.granted and decision.wait_s == 0
    assert limiter_row(fresh_limiter)["reserved_requests"] == 1
    second = store.reserve(limits, 50, max_wait_s=5)
    assert second.granted and second.wait_s == pytest.approx(1.0, abs=0.05)  # 60/min, a bucket of one


def test_settle_gives_back_an_unsent_call_and_keeps_a_sent_ones_charge_in_the_shared_row(fresh_limiter):
    """Through the shared row: with both buckets 10 s in debt (so a refund is not capped at full, however slow the
    machine), an unsent call's settle moves request_free_at back by exactly one request (1 s at 60/min) and
    token_free_at by its 50 tokens (0.5 s at 100/s); a sent call's settle moves neither, whatever it used."""
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=60, tpm=6000)
    reservations = [store.reserve(limits, 50, max_wait_s=60).reservation for _ in range(10)]

    def free_at():  # (request_free_at, token_free_at) of the shared row, epoch seconds (timestamptz: 1 us)
        row = limiter_row(fresh_limiter)
        return row["request_free_at"].timestamp(), row["token_free_at"].timestamp()

    in_debt = free_at()
    store.settle(limits, reservations[-1], Settlement(sent=False, used_tokens=0))
    unsent = free_at()
    assert unsent == (pytest.approx(in_debt[0] - 1.0, abs=1e-5), pytest.approx(in_debt[1] - 0.5, abs=1e-5))
    for used in (0, 5, 500):
        store.settle(limits, reservations[used % 9], Settlement(sent=True, used_tokens=used))
        assert free_at() == unsent, used
    assert sum(limiter_row(fresh_limiter)["window_charged"]) == 3 * 50  # the sent calls' charges, not their usage


def test_concurrent_threads_never_lose_an_update(fresh_limiter):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=6000, tpm=6_000_000)
    used_total, lock, starts = [0], threading.Lock(), []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            decision = store.reserve(limits, 100, max_wait_s=1e6)
            start = time.time() + decision.wait_s
            used = rng.randint(0, 150)
            store.settle(limits, decision.reservation, Settlement(sent=True, used_tokens=used, succeeded=True))
            with lock:
                used_total[0] += used
                starts.append((start, 100))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row = limiter_row(fresh_limiter)
    assert row["reserved_requests"] == row["settled_requests"] == row["sent_requests"] == 200
    assert row["reserved_tokens"] == row["settled_reserved_tokens"] == 200 * 100
    assert row["used_tokens"] == used_total[0]
    assert store.stats(limits)["requests_used"] == 200


def _reserve_in_process(url: str, rpm: int, tpm: int, n: int, queue, barrier) -> None:
    engine = create_engine(normalise_database_url(url), pool_size=1)
    store, limits = LimiterStore(engine), Limits(rpm=rpm, tpm=tpm)
    with engine.connect():  # connected before the start line, so the processes really ask at the same time
        pass
    barrier.wait(60)
    starts = []
    for _ in range(n):
        decision = store.reserve(limits, 30, max_wait_s=1e6)
        starts.append((time.time() + decision.wait_s, 30))
    engine.dispose()
    queue.put(starts)


def test_processes_share_one_budget(fresh_limiter, database_url):
    """Three processes reserve at once without sleeping for their slots: the slots they are given form one
    schedule that keeps the shared pace, as if one process had asked for all of them."""
    limits = Limits(rpm=600, tpm=600 * 25)  # 10 requests/s and 250 tokens/s (30 per call: tokens bind a little)
    context = multiprocessing.get_context("spawn")
    queue, barrier = context.Queue(), context.Barrier(3)
    procs = [context.Process(target=_reserve_in_process,
                             args=(database_url, limits.rpm, limits.tpm, 40, queue, barrier)) for _ in range(3)]
    for proc in procs:
        proc.start()
    starts = [item for _ in procs for item in queue.get(timeout=120)]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len(starts) == 120
    assert limiter_row(fresh_limiter)["reserved_requests"] == 120
    _assert_paced(starts, limits)
    span = max(s for s, _ in starts) - min(s for s, _ in starts)
    # 120 calls x 30 tokens at 250 tokens/s, less one bucket: the schedule is as tight as the budget allows
    assert span == pytest.approx((120 * 30 - limits.token_capacity) / limits.token_rate, rel=0.05, abs=0.3)


def test_a_waiting_caller_holds_no_lock(fresh_limiter):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=20, tpm=60_000)
    limiter = SharedLimiter(store, limits)
    store.reserve(limits, 1, max_wait_s=0)  # empty the one-request bucket: the next caller waits 3 s
    sleeper = threading.Thread(target=limiter.acquire, args=(_job(1), 1))
    sleeper.start()
    time.sleep(0.3)
    assert sleeper.is_alive()  # sleeping for its slot
    started = time.monotonic()
    figures = store.stats(limits)
    denied = store.reserve(limits, 1, max_wait_s=0)  # another caller gets an answer at once, not after the sleeper
    assert time.monotonic() - started < 1.5
    assert sleeper.is_alive() and not denied.granted and figures["waiting_jobs"] == 1
    sleeper.join(10)
    assert not sleeper.is_alive()


def test_waiting_jobs_counts_sleepers_and_rescheduled_jobs_until_they_settle(fresh_limiter):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=60, tpm=60_000)
    first = store.reserve(limits, 1, max_wait_s=0, job_id=1)
    assert first.wait_s == 0 and store.stats(limits)["waiting_jobs"] == 0  # no wait, no row
    sleeping = store.reserve(limits, 1, max_wait_s=10, job_id=2)
    rescheduled = store.reserve(limits, 1, max_wait_s=0, job_id=3)
    assert sleeping.granted and sleeping.wait_s > 0 and not rescheduled.granted
    assert store.stats(limits)["waiting_jobs"] == 2
    figures = store.settle(limits, sleeping.reservation, Settlement(sent=True, used_tokens=1), job_id=2)
    assert figures["waiting_jobs"] == 1  # job 3 still waits for its turn
    with fresh_limiter.begin() as conn:  # a row far past (a job cancelled while rescheduled) ...
        conn.execute(text("INSERT INTO rate_limiter_waits VALUES (99, 'openai', now() - interval '1 hour')"))
    store.reserve(limits, 1, max_wait_s=0, job_id=4)  # ... is deleted by the next rescheduling
    with fresh_limiter.connect() as conn:
        ids = {r[0] for r in conn.execute(text("SELECT job_id FROM rate_limiter_waits"))}
    assert ids == {3, 4}


def test_what_the_server_says_reaches_every_process(fresh_limiter):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=600, tpm=600_000)
    decision = store.reserve(limits, 10, max_wait_s=0)
    settled = time.monotonic()
    store.settle(limits, decision.reservation,
                 Settlement(sent=True, used_tokens=0, throttled=True, view=ServerView(retry_after_s=3)))
    other = LimiterStore(create_engine(fresh_limiter.url))  # another process's view of the same row
    figures = other.stats(limits)

    def held_for_the_rest_of(seconds: float, measured: float) -> bool:  # what is left of it, on a slow machine too
        return seconds - (time.monotonic() - settled) - 0.2 <= measured <= seconds + 0.2

    assert figures["throttled_total"] == 1 and held_for_the_rest_of(3, figures["hold_s"])
    assert not other.reserve(limits, 10, max_wait_s=1).granted
    assert held_for_the_rest_of(3, other.reserve(limits, 10, max_wait_s=5).wait_s)
    other.engine.dispose()


def test_shared_limiter_sleeps_briefly_or_reschedules(fresh_limiter, monkeypatch):
    store, limits = LimiterStore(fresh_limiter), Limits(rpm=5, tpm=60_000)  # one request per 12 s
    limiter = SharedLimiter(store, limits)
    grant = limiter.acquire(_job(1), 100)
    assert grant.waited_s == 0
    with pytest.raises(RetryLater) as retry:  # the next slot is 12 s away: more than a short inline wait
        limiter.acquire(_job(2, time_left=60), 100)
    assert 12 * 0.95 <= retry.value.seconds <= 12 * 1.25 and "rate limiter" in str(retry.value)
    monkeypatch.setattr("jobprocessor.ratelimit.limiter.MAX_INLINE_WAIT_S", 13.0)
    with pytest.raises(RetryLater):  # a wait that fits the inline limit but not the job's deadline
        limiter.acquire(_job(3, time_left=15), 100)
    with pytest.raises(RetryLater, match="deadline"):  # no time left for a call at all
        limiter.acquire(_job(4, time_left=2), 100)
    with pytest.raises(PermanentError, match="OPENAI_TPM"):
        limiter.acquire(_job(5), 60_001)
    assert limiter_row(fresh_limiter)["reserved_requests"] == 1  # nothing reserved by the refused ones


def test_an_unreachable_limiter_reschedules_without_spending_an_attempt():
    from tests.support.gunicorn import free_port

    engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere",
                           connect_args={"connect_timeout": 1})
    limiter = SharedLimiter(LimiterStore(engine), Limits(rpm=60, tpm=60_000))
    with pytest.raises(RetryLater, match="rate limiter unavailable") as retry:
        limiter.acquire(_job(1), 10)
    assert retry.value.seconds == 5.0
    engine.dispose()
