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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from .jsontext import has_nul
from .handlers.registry import HandlerSpec, Job, PermanentError, RetryLater
from .policies import deferral
from .policies.backoff import retry_delay
from .queries import Outcome

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Run:
    """How a job was started: the facts execute() needs besides the job."""

    cut_by_budget: bool  # its deadline is the end of the call's budget, not its own timeout
    deferred_since: Optional[datetime]  # when the job was first put off (None: never)
    max_deferrals: int
    max_deferral_s: float


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


def result_json(result: Any) -> str:
    document = json.dumps(result, allow_nan=False, separators=(",", ":"))
    if has_nul(document):
        raise ValueError("it contains the NUL character, which PostgreSQL jsonb cannot store")
    if "\\ud" in document:  # escaped astral characters are fine, lone surrogates are not
        try:
            json.dumps(result, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("it contains a lone surrogate (half a UTF-16 pair), which PostgreSQL jsonb cannot "
                             "store") from None
    return document


def _defer(job: Job, run: Run, *, why: str, delay_s: Optional[float]) -> Outcome:
    """Put the job off without spending an attempt, unless that goes over the bound."""
    over = deferral.exceeded(job.deferrals, run.deferred_since, datetime.now(timezone.utc),
                             max_count=run.max_deferrals, max_s=run.max_deferral_s)
    if over is not None:
        return Outcome(job.id, "failed", error=f"{over}; last: {why}"[:MAX_ERROR_CHARS])
    return Outcome(job.id, "pending", error=why[:MAX_ERROR_CHARS], delay_s=delay_s, give_back_attempt=True,
                   deferred=True)


def execute(job: Job, spec: Optional[HandlerSpec], run: Run) -> Outcome:
    """Run one handler and turn what happened into an Outcome. Never raises (but KeyboardInterrupt)."""
    try:
        if spec is None:
            raise LookupError(f"no handler is registered for job type {job.type!r} in this process")
        result = spec.func(job)
    except RetryLater as exc:
        return _defer(job, run, why=error_text(exc), delay_s=exc.seconds)
    except PermanentError as exc:
        return Outcome(job.id, "failed", error=error_text(exc))
    except BaseException as exc:  # noqa: BLE001 - any handler failure is the job's outcome, not the call's
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = error_text(exc)
        if run.cut_by_budget and job.time_left() <= 0:
            # the call's budget ended under it, not its own timeout: not the job's fault; it keeps its place
            return _defer(job, run, why=f"cut short by the end of the call's budget: {error}", delay_s=None)
        if job.attempts >= job.max_attempts:
            return Outcome(job.id, "failed", error=f"attempts exhausted ({job.attempts}/{job.max_attempts}); "
                                                   f"last error: {error}"[:MAX_ERROR_CHARS])
        return Outcome(job.id, "pending", error=error, delay_s=retry_delay(job.attempts))
    try:
        return Outcome(job.id, "completed", result_json=result_json(result))
    except (TypeError, ValueError, RecursionError) as exc:
        return Outcome(job.id, "failed", error=f"the handler's result is not JSON-serialisable: "
                                               f"{error_text(exc)}"[:MAX_ERROR_CHARS])


def job_from_row(row, *, deadline_s: float) -> Job:
    """The handler's view of a claimed row whose run is starting now (its attempt already counted)."""
    job = Job(id=row["id"], type=row["type"], payload=row["payload"], store_id=row["store_id"],
              user_id=row["user_id"], priority=row["priority"], attempts=row["attempts"] + 1,
              max_attempts=row["max_attempts"], batch_id=row["batch_id"], deferrals=row["deferrals"] or 0)
    job.set_deadline(deadline_s)
    return job

