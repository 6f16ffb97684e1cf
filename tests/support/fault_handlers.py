"""Misbehaving handlers for the fault tests (tests/test_faults*.py) and the chaos runs (tests/chaos/).

Loaded with JOBPROCESSOR_HANDLERS=tests.support.job_handlers,tests.support.fault_handlers in gunicorn runs;
importing this module registers them in the test process.
"""
import os
import random
import threading
import time

from jobprocessor.handlers import handler
from tests.support.executions import record_execution

NEVER = threading.Event()  # never set in a gunicorn worker: what the hanging and leaking handlers wait on


@handler("fault.record_sleep", max_attempts=5, timeout_s=1)
def record_sleep(job):
    """Records that it started, then works for payload.seconds: a job a SIGKILL can catch in the middle."""
    record_execution(job)
    time.sleep(float(job.payload.get("seconds", 0.2)))
    return {"pid": os.getpid(), "attempt": job.attempts}


@handler("fault.flaky", max_attempts=3, timeout_s=10)
def flaky(job):
    """The soak's job: records its run, fails at random with probability payload.fail (default 5%)."""
    record_execution(job)
    if random.random() < float(job.payload.get("fail", 0.05)):
        raise RuntimeError(f"random failure of job {job.id} on attempt {job.attempts}")
    return {"ok": job.id}


@handler("fault.hang", max_attempts=3, timeout_s=1)
def hang(job):
    """Ignores its deadline and never returns."""
    NEVER.wait()


@handler("fault.leak_thread", max_attempts=3, timeout_s=5)
def leak_thread(job):
    """Returns at once but leaves a non-daemon thread behind that never ends."""
    threading.Thread(target=NEVER.wait, name=f"leaked-by-job-{job.id}", daemon=False).start()
    return {"leaked": threading.active_count()}


@handler("fault.slow_ok", max_attempts=3, timeout_s=5)
def slow_ok(job):
    """Slower than fault.hang's 1 s timeout but inside its own 5 s: must complete, not be abandoned."""
    time.sleep(float(job.payload.get("seconds", 2.5)))
    return {"slept": job.payload.get("seconds", 2.5)}


@handler("fault.nan_result", max_attempts=3, timeout_s=5)
def nan_result(job):
    return {"ratio": float("nan")}


@handler("fault.circular_result", max_attempts=3, timeout_s=5)
def circular_result(job):
    result = {}
    result["self"] = result
    return result


@handler("fault.deep_result", max_attempts=3, timeout_s=5)
def deep_result(job):
    result = []
    for _ in range(100_000):
        result = [result]
    return result


@handler("fault.surrogate_result", max_attempts=3, timeout_s=5)
def surrogate_result(job):
    return {"name": "half an emoji \ud83d"}


@handler("fault.surrogate_error", max_attempts=3, timeout_s=5)
def surrogate_error(job):
    raise RuntimeError("upstream said \udcff\udcfe")


@handler("fault.raise_in_except", max_attempts=3, timeout_s=5)
def raise_in_except(job):
    try:
        raise ValueError("the first problem")
    except ValueError:
        cleanup = None
        cleanup.close()  # the error handling itself fails: AttributeError while handling ValueError


@handler("fault.raise_in_finally", max_attempts=3, timeout_s=5)
def raise_in_finally(job):
    try:
        return {"would have": "succeeded"}
    finally:
        raise KeyError("raised in finally")


@handler("fault.str_not_str", max_attempts=3, timeout_s=5)
def str_not_str(job):
    class Weird(Exception):
        def __str__(self):
            return 42  # str() of this raises TypeError

    raise Weird()


@handler("fault.system_exit", max_attempts=3, timeout_s=5)
def system_exit(job):
    raise SystemExit(3)


@handler("fault.huge_error", max_attempts=3, timeout_s=5)
def huge_error(job):
    raise RuntimeError("x" * 1_000_000)


@handler("fault.exit", max_attempts=1, timeout_s=5)
def exit_process(job):
    """A poison pill: kills its own process (what a segfaulting C extension or an OOM kill looks like)."""
    record_execution(job)
    os._exit(1)
