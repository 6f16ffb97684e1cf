"""One `/process-pending` call, as a pipeline:

    claim (rescue expired leases + lock due jobs, one statement)
      -> run handlers on JOBS_CONCURRENCY threads, each job with a deadline, none started that cannot finish
         inside the budget and its lease
      -> record outcomes in batches (one UPDATE per batch), release what was not started

The call returns within budget_s + GRACE_S even if a handler hangs: a handler past its deadline is abandoned (its
thread is replaced so the others keep their concurrency). Its job stays `running` under its lease; if the handler
ever returns, its thread records the outcome itself, and if it never does the lease runs out and a later call
rescues the job. Nothing is lost either way.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from sqlalchemy.engine import Engine

from . import maintenance, queries
from .config import Settings
from .extensions import db
from .handlers.registry import HandlerSpec, Job, PermanentError, RetryLater, get_handler
from .metrics import observe_claimed, observe_outcome
from .policies.backoff import retry_delay
from .queries import Outcome

log = logging.getLogger("jobprocessor.process")

GRACE_S = 2.0  # how long past a deadline the call waits for a handler before abandoning it
LEASE_SAFETY_S = 2.0  # a job must finish this long before its lease ends, so no other call rescues it meanwhile
FLUSH_EVERY_OUTCOMES = 500  # write outcomes when this many are waiting ...
FLUSH_EVERY_S = 1.0  # ... or when the oldest has waited this long
MAX_ERROR_CHARS = 2000
NO_STORE = ""  # the `stores` key of jobs without a store_id (a real store_id is never empty: CHECK constraint)


@dataclass
class RunSummary:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    rescued: int = 0
    abandoned: int = 0  # still running past their deadline when the call answered (recorded late or rescued)
    lost: int = 0  # outcomes not written because another call had taken the job over after its lease ran out
    duration_ms: int = 0
    stores: dict = field(default_factory=dict)
    worker: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.claimed == 0:
            out["message"] = "No pending jobs"
        return out


def worker_token() -> str:
    """Identifies one call's claim (locked_by): host, process and a random part, unique per call."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


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


def _error_text(exc: BaseException) -> str:
    """`Type: message`, robust against exceptions whose __str__ itself raises, storable as text. When the handler's
    own error handling raised, the error it was handling is named too: that is usually the real problem."""
    text = _describe(exc)
    origin = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if origin is not None:
        text += f" (while handling {_describe(origin)})"
    return _storable(text)[:MAX_ERROR_CHARS]


def _result_json(result: Any) -> str:
    document = json.dumps(result, allow_nan=False, separators=(",", ":"))
    if "\\u0000" in document:
        raise ValueError("it contains the NUL character, which PostgreSQL jsonb cannot store")
    if "\\ud" in document:  # escaped astral characters are fine, lone surrogates are not
        try:
            json.dumps(result, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("it contains a lone surrogate (half a UTF-16 pair), which PostgreSQL jsonb cannot "
                             "store") from None
    return document


def execute(job: Job, spec: Optional[HandlerSpec]) -> Outcome:
    """Run one handler and turn what happened into an Outcome. Never raises."""
    try:
        if spec is None:
            raise LookupError(f"no handler is registered for job type {job.type!r} in this process")
        result = spec.func(job)
    except RetryLater as exc:
        return Outcome(job.id, "pending", error=_error_text(exc), delay_s=exc.seconds, give_back_attempt=True)
    except PermanentError as exc:
        return Outcome(job.id, "failed", error=_error_text(exc))
    except BaseException as exc:  # noqa: BLE001 - any handler failure is the job's outcome, not the call's
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = _error_text(exc)
        if job.attempts >= job.max_attempts:
            return Outcome(job.id, "failed", error=f"attempts exhausted ({job.attempts}/{job.max_attempts}); "
                                                   f"last error: {error}"[:MAX_ERROR_CHARS])
        return Outcome(job.id, "pending", error=error, delay_s=retry_delay(job.attempts))
    try:
        return Outcome(job.id, "completed", result_json=_result_json(result))
    except (TypeError, ValueError, RecursionError) as exc:
        return Outcome(job.id, "failed", error=f"the handler's result is not JSON-serialisable: "
                                               f"{_error_text(exc)}"[:MAX_ERROR_CHARS])


def _job_from_row(row) -> Job:
    return Job(id=row["id"], type=row["type"], payload=row["payload"], store_id=row["store_id"],
               user_id=row["user_id"], priority=row["priority"], attempts=row["attempts"],
               max_attempts=row["max_attempts"], batch_id=row["batch_id"])


class _BatchRun:
    """Runs one call's claimed jobs on worker threads and writes their outcomes in batches."""

    def __init__(self, engine: Engine, settings: Settings, token: str, rows: list, *, finish_by: float,
                 answer_by: float, app=None):
        self.engine, self.settings, self.token, self.app = engine, settings, token, app
        self.finish_by = finish_by  # no job may run past this (budget end, or lease end if sooner)
        self.answer_by = answer_by  # the call answers by then whatever is still running
        self.window = finish_by - time.monotonic()
        self.pending = deque(rows)
        self.cond = threading.Condition()
        self.stopping = False
        self.unflushed: list[Outcome] = []
        self.oldest_unflushed = 0.0
        self.in_flight: dict[int, float] = {}  # job id -> deadline (monotonic)
        self.abandoned: set[int] = set()
        self.active_threads = 0
        self.counts: Counter = Counter()

    # -- worker side --------------------------------------------------------------------------------------------

    def _timeout_for(self, spec: Optional[HandlerSpec]) -> float:
        declared = (spec.timeout_s if spec and spec.timeout_s else None) or self.settings.JOBS_DEFAULT_TIMEOUT_S
        return min(declared, self.window)  # a handler slower than the whole budget gets the whole budget

    def _hand_over(self, done: Optional[tuple[int, Outcome]]) -> tuple[bool, Optional[tuple[Job, Any]]]:
        """Record the outcome of the job this thread just ran and take its next job, under one acquisition of the
        lock (two per job cost a third of the CPU with quick handlers). Returns (late, next): late means the
        coordinator abandoned the job just run, so this thread records that outcome itself and stops."""
        with self.cond:
            if done is not None:
                job_id, outcome = done
                self.in_flight.pop(job_id, None)
                if job_id in self.abandoned:
                    return True, None
                self._record(outcome, _kind(outcome))
            while self.pending and not self.stopping:
                row = self.pending.popleft()
                spec = get_handler(row["type"])
                timeout = self._timeout_for(spec)
                now = time.monotonic()
                # cannot finish inside the budget (or none is left: a slow claim can use it up): give it back
                if timeout <= 0 or now + timeout > self.finish_by + 0.05:
                    self._record(Outcome(row["id"], "pending", delay_s=None, give_back_attempt=True), "released")
                    continue
                job = _job_from_row(row)
                job.set_deadline(timeout)
                self.in_flight[job.id] = now + timeout
                return False, (job, spec)
            return False, None

    def _worker(self) -> None:
        late, done = False, None
        with (self.app.app_context() if self.app is not None else nullcontext()):
            try:
                while True:
                    late, taken = self._hand_over(done)
                    if late:
                        self._write_late(done[1])
                        return  # the coordinator stopped counting this thread and may have replaced it
                    if taken is None:
                        return
                    job, spec = taken
                    handler_started = time.monotonic()
                    outcome = execute(job, spec)
                    done = (job.id, outcome)  # from here on the outcome is recorded, whatever else fails
                    try:
                        observe_outcome(job.type, _kind(outcome), time.monotonic() - handler_started)
                        if self.app is not None and db.session.registry.has():
                            db.session.remove()  # a handler's own session never outlives its job
                    except Exception:  # noqa: BLE001 - bookkeeping must not cost the job its outcome
                        log.exception("after job %s: metrics or session clean-up failed", job.id)
            finally:
                with self.cond:
                    if not late:
                        self.active_threads -= 1
                    self.cond.notify_all()

    def _record(self, outcome: Outcome, kind: str) -> None:
        """Under self.cond."""
        if not self.unflushed:
            self.oldest_unflushed = time.monotonic()
        self.unflushed.append(outcome)
        self.counts[kind] += 1
        if len(self.unflushed) >= FLUSH_EVERY_OUTCOMES:
            self.cond.notify_all()

    def _write_late(self, outcome: Outcome) -> None:
        try:
            with self.engine.begin() as conn:
                written = queries.finish(conn, self.token, [outcome])
            log.info(json.dumps({"event": "late_outcome", "job_id": outcome.job_id, "status": outcome.status,
                                 "written": bool(written), "worker": self.token}))
        except Exception:  # noqa: BLE001 - the lease will bring the job back
            log.exception("could not record the late outcome of job %s; its lease will expire", outcome.job_id)

    def _start_thread(self) -> None:
        self.active_threads += 1
        threading.Thread(target=self._worker, name=f"job-{self.token[-6:]}", daemon=True).start()

    # -- coordinator side -----------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            # the call fails (its outcomes could not be written): its threads must start no further jobs, whose
            # outcomes nobody would record; what was not started waits for the lease like the rest of the claim
            with self.cond:
                self.stopping = True
                # handlers still running record their own outcomes when they return (as abandoned ones do)
                self.abandoned.update(self.in_flight)
                self.cond.notify_all()
            raise

    def _run(self) -> None:
        with self.cond:
            for _ in range(min(self.settings.JOBS_CONCURRENCY, len(self.pending))):
                self._start_thread()
        while True:
            with self.cond:
                now = time.monotonic()
                if self.active_threads == 0 or now >= self.answer_by:
                    break
                for job_id, deadline in self.in_flight.items():
                    if now > deadline + GRACE_S and job_id not in self.abandoned:
                        self.abandoned.add(job_id)  # overran its timeout: stop waiting, keep concurrency
                        self.active_threads -= 1
                        if self.pending:
                            self._start_thread()
                due_flush = self.unflushed and (len(self.unflushed) >= FLUSH_EVERY_OUTCOMES
                                                or now - self.oldest_unflushed >= FLUSH_EVERY_S)
                if not due_flush:
                    self.cond.wait(timeout=0.1)
                    continue
                batch, self.unflushed = self.unflushed, []
            self._flush(batch)
        with self.cond:
            self.stopping = True
            while self.pending:
                row = self.pending.popleft()
                self._record(Outcome(row["id"], "pending", delay_s=None, give_back_attempt=True), "released")
            for job_id in self.in_flight:
                self.abandoned.add(job_id)
            self.counts["abandoned"] = len(self.abandoned)
            batch, self.unflushed = self.unflushed, []
        self._flush(batch)

    def _flush(self, batch: list[Outcome]) -> None:
        if not batch:
            return
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    written = queries.finish(conn, self.token, batch)
                self.counts["lost"] += len(batch) - len(written)
                return
            except Exception:  # noqa: BLE001
                if attempt == 2:
                    # the jobs stay `running` under this call's lease and come back when it expires
                    log.exception("could not record %d outcomes; their leases will expire and they will rerun",
                                  len(batch))
                    raise
                time.sleep(0.2)


def _kind(outcome: Outcome) -> str:
    if outcome.status == "completed":
        return "succeeded"
    if outcome.status == "failed":
        return "failed"
    return "retried"


def process_pending(engine: Engine, settings: Settings, *, limit: int, budget_s: float,
                    job_type: Optional[str] = None, app=None) -> RunSummary:
    """Claim up to `limit` due jobs and run them within `budget_s` seconds. The endpoint and the CLI call this."""
    started = time.monotonic()
    token = worker_token()

    def claim_up_to(n: int) -> queries.ClaimResult:
        with engine.begin() as conn:
            return queries.claim(conn, limit=n, worker=token, lease_s=settings.JOBS_LEASE_S,
                                 job_types=[job_type] if job_type else None,
                                 rescue_limit=settings.JOBS_RESCUE_LIMIT, max_per_store=settings.JOBS_MAX_PER_STORE)

    claim = claim_up_to(limit)
    jobs, rescued = list(claim.jobs), claim.rescued
    if claim.schedules_due:  # maintenance: enqueue due recurring jobs, then give them this call's spare slots
        scheduled = maintenance.run_due_schedules(engine, settings).get("schedules", {})
        if scheduled.get("enqueued") and len(jobs) < limit:
            try:
                extra = claim_up_to(limit - len(jobs))
                jobs, rescued = jobs + list(extra.jobs), rescued + extra.rescued
            except Exception:  # noqa: BLE001 - the jobs already claimed still run; the new ones wait for a call
                log.exception("could not claim the jobs just scheduled; the next call will")
    summary = RunSummary(claimed=len(jobs), rescued=rescued, worker=token)
    observe_claimed((row["type"] for row in jobs), rescued)
    summary.stores = dict(Counter(row["store_id"] or NO_STORE for row in jobs))
    if jobs:
        run = _BatchRun(engine, settings, token, jobs,
                        finish_by=min(started + budget_s, started + settings.JOBS_LEASE_S - LEASE_SAFETY_S),
                        answer_by=started + budget_s + GRACE_S, app=app)
        run.run()
        for name in ("succeeded", "retried", "failed", "released", "abandoned", "lost"):
            setattr(summary, name, run.counts[name])
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    log.info(json.dumps({"event": "process_pending", **summary.to_dict(), "limit": limit, "budget_s": budget_s,
                         "distribution": f"claimed {summary.claimed} from {len(summary.stores)} stores",
                         "type": job_type}))
    return summary
