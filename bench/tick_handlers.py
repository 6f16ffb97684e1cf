"""Job types for bench/tick (issue 10), loaded like a handler module: JOBPROCESSOR_HANDLERS=bench.tick_handlers.
Never loaded by the product.

Neither type declares a timeout_s: the service default applies (JOBS_DEFAULT_TIMEOUT_S), and after issue 10 the
processor's runtime estimate. Each records in its result when its handler started and how long it ran, by the
wall clock of this host (time.time(), the clock PostgreSQL's now() reads on this machine), so the benchmark does
not depend on when the processor sets jobs.started_at (at claim today; perhaps at handler start later).
"""
from __future__ import annotations

import os
import time

from jobprocessor.handlers import handler


@handler("bench.sleep")
def sleep(job):
    """Sleeps payload `seconds` (a well-behaved handler: never past its deadline)."""
    started, clock = time.time(), time.monotonic()
    seconds = float((job.payload or {}).get("seconds", 0.2))
    time.sleep(max(0.0, min(seconds, job.time_left())))
    return {"started": started, "ran_s": time.monotonic() - clock, "pid": os.getpid()}


@handler("bench.probe")
def probe(job):
    """Does nothing but record when it started: the pick-up latency probe."""
    return {"started": time.time(), "pid": os.getpid()}
