"""Handlers the tests enqueue. Loaded through JOBPROCESSOR_HANDLERS=tests.support.job_handlers (also in gunicorn runs).

`test.record` writes one row per execution into job_executions (created by the test session), which is how the
tests prove that every job ran exactly once.
"""
import os
import threading
import time

from sqlalchemy import text

from jobprocessor.extensions import db
from jobprocessor.handlers import PermanentError, RetryLater, handler
from tests.support.executions import record_execution

HANG_FOREVER = threading.Event()  # never set: test.hang blocks on it


@handler("test.record", max_attempts=3, timeout_s=10)
def record(job):
    record_execution(job)
    return {"recorded": job.id}


@handler("test.echo", max_attempts=3, timeout_s=10)
def echo(job):
    return {"payload": job.payload, "store_id": job.store_id, "attempts": job.attempts}


@handler("test.sleep", max_attempts=3, timeout_s=30)
def sleep(job):
    time.sleep(float(job.payload.get("seconds", 1)))
    return {"slept": job.payload.get("seconds", 1)}


@handler("test.fail", max_attempts=3, timeout_s=10)
def fail(job):
    raise RuntimeError(job.payload.get("message", "boom"))


@handler("test.retry_later", max_attempts=3, timeout_s=10)
def retry_later(job):
    raise RetryLater(float(job.payload.get("seconds", 60)), "busy upstream")


@handler("test.permanent", max_attempts=3, timeout_s=10)
def permanent(job):
    raise PermanentError("the product does not exist")


@handler("test.unserialisable", max_attempts=3, timeout_s=10)
def unserialisable(job):
    return {"when": object()}


@handler("test.hang", max_attempts=3, timeout_s=float(os.environ.get("TEST_HANG_TIMEOUT_S", "1")))
def hang(job):
    HANG_FOREVER.wait(float(job.payload.get("seconds", 3600)))
    return {"woke": True}


@handler("test.quick_sleep", max_attempts=3, timeout_s=1)
def quick_sleep(job):
    """Declares a 1 s timeout: the budget tests rely on it to know when a job can no longer start."""
    time.sleep(float(job.payload.get("seconds", 0.5)))
    return {"slept": job.payload.get("seconds", 0.5)}


@handler("test.broken_error", max_attempts=3, timeout_s=10)
def broken_error(job):
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("__str__ exploded")

    raise Unprintable()


@handler("test.until_deadline", max_attempts=3, timeout_s=30)
def until_deadline(job):
    """Works until its deadline, then gives up: what a well-behaved handler does when the budget ends first."""
    time.sleep(job.time_left())
    raise TimeoutError(f"job {job.id} ran out of time")


@handler("test.no_timeout", max_attempts=3)
def no_timeout(job):
    """Declares no timeout_s (the service default applies): what the start rule must not be fooled by."""
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO job_executions (job_id, pid, attempt) VALUES (:id, :pid, :attempt)"),
                     {"id": job.id, "pid": os.getpid(), "attempt": job.attempts})
    time.sleep(float(job.payload.get("seconds", 0.1)))
    return {"deadline": job.deadline.isoformat()}


@handler("test.deferred_forever", max_attempts=3, timeout_s=10)
def deferred_forever(job):
    raise RetryLater(0, f"not yet (deferral {job.deferrals + 1})")


@handler("test.later_once", max_attempts=3, timeout_s=10)
def later_once(job):
    if job.deferrals == 0:
        raise RetryLater(float(job.payload.get("seconds", 1.5)), "come back soon")
    return {"deferrals": job.deferrals}


@handler("test.span", max_attempts=3, timeout_s=10)
def span(job):
    """Records when its run started and ended (job_spans), sleeping `seconds` in between."""
    with db.engine.begin() as conn:
        span_id = conn.execute(text("INSERT INTO job_spans (job_id, store_id, pid) VALUES (:id, :store, :pid) "
                                    "RETURNING ctid::text"),
                               {"id": job.id, "store": job.store_id, "pid": os.getpid()}).scalar()
    time.sleep(float(job.payload.get("seconds", 0.1)))
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE job_spans SET ended_at = clock_timestamp() WHERE ctid = CAST(:at AS tid)"),
                     {"at": span_id})
    return {"span": job.id}


from tests.support import workflow_handlers  # noqa: E402,F401 - the workflow tests' handlers, registered with these


@handler("test.session", max_attempts=3, timeout_s=10)
def session(job):
    """Uses the Flask-SQLAlchemy session and leaves it open; says whether an earlier job's session was still there
    (the processor removes a handler's session after each job)."""
    current = db.session()
    left_by = current.info.get("job")
    current.info["job"] = job.id
    current.execute(text("SELECT 1"))
    return {"left_by": left_by}
