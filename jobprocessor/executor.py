"""One handler run, turned into an Outcome: what the queue does with the job next. Never raises.

    completed     the handler returned a JSON-able result
    failed        PermanentError; attempts exhausted; a result that cannot be stored; deferred beyond the bound
    pending       RetryLater (no attempt spent, after its delay); cut short by the end of the call's budget (no
                  attempt spent, its place in line kept); any other exception (backoff)

RetryLater and budget cuts are deferrals: bounded by JOBS_MAX_DEFERRALS / JOBS_MAX_DEFERRAL_S
(jobprocessor/policies/deferral.py).
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from .handler_registry import HandlerSpec
from .job import Job, PermanentError, RetryLater, StartedJob
from .jsontext import has_nul
from .policies import deferral
from .policies.backoff import retry_delay
from .policies.log_rate import LogRate
from .queries import Outcome

log = logging.getLogger("jobprocessor.jobs")

MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 8000  # jobs.last_traceback keeps the end of a longer one (where it failed)
MAX_LOGGED_TRACEBACK_CHARS = 4000
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
# one log line per failure, at most 10 per job type a minute (the rest are counted in the next line)
FAILURE_LOG_RATE = LogRate(per_window=10, window_s=60.0)


@dataclass(frozen=True)
class Run:
    """How a job was started: the facts execute() needs besides the job."""

    cut_by_budget: bool  # its deadline is the end of the call's budget, not its own timeout
    deferred_since: Optional[datetime]  # when the job was first put off (None: never)
    max_deferrals: int
    max_deferral_s: float
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # MAX_RESULT_BYTES: a bigger result fails the job


def _storable(text: str) -> str:
    """PostgreSQL text holds neither NUL nor a lone surrogate (Python strings hold both); one such character in
    one error message would fail the batch's whole UPDATE, so they are written as escapes instead."""
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - a broken __str__ must not lose the job
        message = "<error message could not be rendered>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """`Type: message`, robust against exceptions whose __str__ itself raises, storable as text. When the handler's
    own error handling raised, the error it was handling is named too: that is usually the real problem."""
    text = _describe(exc)
    origin = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if origin is not None:
        text += f" (while handling {_describe(origin)})"
    return _storable(text)[:MAX_ERROR_CHARS]


def traceback_text(exc: BaseException) -> str:
    """The handler's traceback, storable, and bounded: a longer one keeps its first line and its end (the frame
    that raised and the error), which is what an operator needs."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001 - a broken __str__ again
        text = "".join(traceback.format_tb(exc.__traceback__)) + type(exc).__name__
    text = _storable(text.rstrip("\n"))
    if len(text) > MAX_TRACEBACK_CHARS:
        head = text.split("\n", 1)[0]
        tail = text[-(MAX_TRACEBACK_CHARS - len(head) - 40):]
        text = f"{head}\n  ... ({len(text) - len(head) - len(tail)} characters cut) ...\n{tail}"
    return text


def _log_failure(job: Job, outcome: Outcome, exc: BaseException) -> None:
    """One structured line per failed run (rate-limited per job type): which job, what became of it, why, where."""
    logged, left_out = FAILURE_LOG_RATE.admit(job.type, time.monotonic())
    if not logged:
        return
    became = {"failed": "failed", "pending": "deferred" if outcome.deferred else "retry"}.get(outcome.status)
    line = {"event": "job_failed", "job_id": job.id, "type": job.type, "store_id": job.store_id,
            "attempt": job.attempts, "max_attempts": job.max_attempts, "outcome": became,
            "error": (outcome.error or "")[:500], "exception": type(exc).__name__,
            "traceback": (outcome.traceback or "")[-MAX_LOGGED_TRACEBACK_CHARS:]}
    if left_out:
        line["not_logged_before"] = left_out  # failures of this type since the last line, not logged
    try:
        log.log(logging.ERROR if outcome.status == "failed" else logging.WARNING, json.dumps(line))
    except Exception:  # noqa: BLE001 - logging must never cost the job its outcome
        pass


# one encoder for every result: json.dumps with options builds a new encoder per call, a measurable part of a
# microsecond job's cost
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def result_json(result: Any, max_bytes: Optional[int] = None) -> str:
    if result is None:
        return "null"
    document = _ENCODER.encode(result)
    # ASCII (json.dumps escapes the rest), so its length is its size in bytes
    if max_bytes is not None and len(document) > max_bytes:
        raise ResultTooLarge(f"the handler's result is {len(document)} bytes as JSON, more than MAX_RESULT_BYTES "
                             f"({max_bytes}): return less (keep big data elsewhere and return a reference to it)")
    if has_nul(document):
        raise ValueError("it contains the NUL character, which PostgreSQL jsonb cannot store")
    if "\\ud" in document:  # escaped astral characters are fine, lone surrogates are not
        try:
            json.dumps(result, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("it contains a lone surrogate (half a UTF-16 pair), which PostgreSQL jsonb cannot "
                             "store") from None
    return document


class ResultTooLarge(ValueError):
    """A result over MAX_RESULT_BYTES: the job fails (trying again would give the same)."""


def _defer(job: Job, run: Run, *, why: str, delay_s: Optional[float],
           traceback: Optional[str] = None) -> Outcome:
    """Put the job off without spending an attempt, unless that goes over the bound."""
    over = deferral.exceeded(job.deferrals, run.deferred_since, datetime.now(timezone.utc),
                             max_count=run.max_deferrals, max_s=run.max_deferral_s)
    if over is not None:
        return Outcome(job.id, "failed", error=f"{over}; last: {why}"[:MAX_ERROR_CHARS], traceback=traceback)
    return Outcome(job.id, "pending", error=why[:MAX_ERROR_CHARS], delay_s=delay_s, give_back_attempt=True,
                   deferred=True, traceback=traceback)


def execute(job: Job, spec: Optional[HandlerSpec], run: Run) -> Outcome:
    """Run one handler and turn what happened into an Outcome. Never raises (but KeyboardInterrupt). A failure
    (any exception but RetryLater) is logged (rate-limited) and its traceback kept on the job."""
    try:
        if spec is None:
            raise LookupError(f"no handler is registered for job type {job.type!r} in this process")
        result = spec.func(job)
    except RetryLater as exc:
        return _defer(job, run, why=error_text(exc), delay_s=exc.seconds)
    except BaseException as exc:  # any handler failure is the job's outcome, not the call's
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome = _failed_run(job, run, exc)
        _log_failure(job, outcome, exc)
        return outcome
    try:
        return Outcome(job.id, "completed", result_json=result_json(result, run.max_result_bytes))
    except ResultTooLarge as exc:
        return Outcome(job.id, "failed", error=str(exc)[:MAX_ERROR_CHARS])
    except (TypeError, ValueError, RecursionError) as exc:
        return Outcome(job.id, "failed", error=f"the handler's result is not JSON-serialisable: "
                                               f"{error_text(exc)}"[:MAX_ERROR_CHARS])


def _failed_run(job: Job, run: Run, exc: BaseException) -> Outcome:
    error, where = error_text(exc), traceback_text(exc)
    if isinstance(exc, PermanentError):
        return Outcome(job.id, "failed", error=error, traceback=where)
    if run.cut_by_budget and job.time_left() <= 0:
        # the call's budget ended under it, not its own timeout: not the job's fault; it keeps its place
        return _defer(job, run, why=f"cut short by the end of the call's budget: {error}", delay_s=None,
                      traceback=where)
    if job.attempts >= job.max_attempts:
        return Outcome(job.id, "failed", error=f"attempts exhausted ({job.attempts}/{job.max_attempts}); "
                                               f"last error: {error}"[:MAX_ERROR_CHARS], traceback=where)
    return Outcome(job.id, "pending", error=error, delay_s=retry_delay(job.attempts), traceback=where)


def job_from_row(row, *, deadline_s: float, steps=None) -> Job:
    """The handler's view of a claimed row (jobprocessor/claimed.py) whose run is starting now (its attempt already
    counted); `steps`: the job's workflows.steps.StepStore (job.step()). Its payload is decoded, and its deadline
    as a date made, when the handler first reads them (job.StartedJob)."""
    return StartedJob.of_claim(
        id=row.id, type=row.type, payload_json=row.payload_json, store_id=row.store_id, user_id=row.user_id,
        priority=row.priority, attempts=row.attempts + 1, max_attempts=row.max_attempts, batch_id=row.batch_id,
        deferrals=row.deferrals or 0, deadline_monotonic=time.monotonic() + deadline_s, _steps=steps)

