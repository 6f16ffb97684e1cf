"""Sample job types for `make run --demo`, the README's curl lines and the benchmark.

Not loaded unless named in JOBPROCESSOR_HANDLERS (e.g. JOBPROCESSOR_HANDLERS=jobprocessor.handlers.demo).
"""
import random
import time

from ..handler_registry import handler
from ..job import PermanentError, RetryLater


@handler("demo.noop", max_attempts=3, timeout_s=5)
def noop(job):
    """Does nothing: measures the queue's own overhead."""
    return None


@handler("demo.echo", max_attempts=3, timeout_s=5)
def echo(job):
    return {"echo": job.payload, "store_id": job.store_id, "attempt": job.attempts}


@handler("demo.sleep", max_attempts=3, timeout_s=60)
def sleep(job):
    seconds = float(job.payload.get("seconds", 1))
    time.sleep(min(seconds, job.time_left()))
    return {"slept": seconds}


@handler("demo.flaky", max_attempts=5, timeout_s=5)
def flaky(job):
    """Fails at random (payload `fail_rate`, default 0.5); retried with backoff."""
    if random.random() < float(job.payload.get("fail_rate", 0.5)):
        raise RuntimeError("flaky failure (demo)")
    return {"ok": True, "attempt": job.attempts}


@handler("demo.rate_limited", max_attempts=3, timeout_s=5)
def rate_limited(job):
    """Asks to run again later once (RetryLater spends no attempt; job.deferrals counts the times it was put off),
    then succeeds."""
    if job.deferrals == 0 and not job.payload.get("done"):
        raise RetryLater(float(job.payload.get("seconds", 5)), "upstream asked us to slow down (demo)")
    return {"ok": True, "deferred": job.deferrals}


@handler("demo.invalid", max_attempts=3, timeout_s=5)
def invalid(job):
    raise PermanentError("this job can never succeed (demo)")
