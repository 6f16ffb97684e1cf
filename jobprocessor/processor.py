"""One /process-pending call (a tick), as a pipeline that works until its budget ends:

    claim a round      rescue expired leases + lease due jobs, fair across stores: one statement; sized to the
                       threads that are free (plus a prefetch of what they will get through in the next moment)
      -> start         on a free thread of the job's lane, while the job type's runtime estimate fits in what is
                       left of the budget (policies/runtime.py); its attempt is spent now, committed before its
                       handler runs (one statement for the jobs starting together)
      -> perform       with a deadline: the earlier of its timeout and the end of the budget
      -> record        outcomes in batches (one UPDATE per batch); the leases of every job the call holds are
                       renewed meanwhile (leases.py), so leases can be short and a dead process's jobs come back soon
    ... next round as soon as threads are about to be free, until the call has claimed `limit` jobs, its budget is
        spent, or its queue stayed dry for JOBS_IDLE_GRACE_S (a call with nothing due answers at once).

Lanes: handlers run on JOBS_CONCURRENCY threads, except the types that pass a shared rate limit (product.optimize:
OpenAI), which get a lane of their own sized as rate x observed latency (up to JOBS_MAX_IO_CONCURRENCY), so an
I/O-bound type can reach its rate without oversubscribing the CPU-bound ones.

The call answers by budget_s + GRACE_S even if a handler hangs: a handler past its deadline + GRACE_S is
abandoned (its thread is replaced so the lane keeps its concurrency). Its job stays `running`, its lease renewed
while the thread lives (up to JOBS_STUCK_HANDLER_S past its deadline); when the handler returns its own thread
records the outcome. A job that did not start is given back as it was (no attempt spent, its place kept).
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
from typing import Optional

from sqlalchemy.engine import Engine

from . import queries, runtimes, ticks
from .config import Settings
from .executor import Run, execute, job_from_row
from .extensions import db
from .handler_registry import HandlerSpec, get_handler, registered_types
from .leases import LeaseKeeper, keeper_for
from .maintenance.tick import TickMaintenance
from .metrics import observe_abandoned, observe_claimed, observe_outcomes, observe_released, observe_tick
from .policies import runtime
from .policies.fairness import NO_STORE
from .queries import Outcome
from .ratelimit import gate
from .runtimes import RuntimeBook
from .workflows.steps import StepStore

log = logging.getLogger("jobprocessor.process")

GRACE_S = 2.0  # how long past a deadline the call waits for a handler before abandoning it
FLUSH_EVERY_OUTCOMES = 1000  # write outcomes when this many are waiting (a round's most: one FINISH a round) ...
FLUSH_EVERY_S = 0.25  # ... or when the oldest has waited this long (a killed call loses no more than that)
POLL_S = 0.5  # a call with free threads and a dry queue asks again this often (PgBouncer carries no LISTEN)
PREFETCH_HORIZON_S = 0.5  # a round also claims what the threads will get through in this long
MAX_ROUND = 1000  # most jobs one claim statement asks for
MIN_CLAIM_LEFT_S = 0.05  # no round is claimed with less of the budget left
GATE_S = 1.0  # a rate-limited job starts only when its limit has room within this long (else it waits in line)
START_AHEAD_S = 0.02  # a thread marks as started at once the quick jobs it will run within this much expected work
MAX_RUN = 64  # ... at most this many
GATE_READ_EVERY_S = 0.2  # a lane reads its limit's state at most this often
CPU_LANE = "handlers"
MEAN_DECAY = 0.8  # a lane's mean run time, an EWMA over its successes: m <- MEAN_DECAY * m + (1 - MEAN_DECAY) * x


def _next_mean(mean: Optional[float], seconds: float) -> float:
    """A lane's mean run time after one more success that took `seconds` (the first one sets it)."""
    return seconds if mean is None else MEAN_DECAY * mean + (1 - MEAN_DECAY) * seconds


@dataclass
class RunSummary:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    rescued: int = 0
    abandoned: int = 0  # still running past their deadline when the call answered (recorded late or rescued)
    lost: int = 0  # outcomes not written because another call had taken the job over
    rounds: int = 0  # claim statements that claimed at least one job
    duration_ms: int = 0
    stores: dict = field(default_factory=dict)
    worker: str = ""
    busy: bool = False  # refused: this process already runs JOBS_MAX_TICKS_PER_PROCESS calls

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.busy:
            out["message"] = ("Busy: this process already runs its JOBS_MAX_TICKS_PER_PROCESS calls; this one did "
                              "nothing (the running ones go on)")
        elif self.claimed == 0:
            out["message"] = "No pending jobs"
        return out


def _session_left(registry) -> bool:
    """Whether this thread's app context holds a Flask-SQLAlchemy session (asked after every job): registry.has(),
    answered at once when no context of the process holds one (a handler that uses none leaves none)."""
    sessions = getattr(registry, "registry", None)
    if isinstance(sessions, dict) and not sessions:
        return False
    return registry.has()


def worker_token() -> str:
    """Identifies one call's claim (locked_by): host, process and a random part, unique per call."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _kind(outcome: Outcome) -> str:
    if outcome.status == "completed":
        return "succeeded"
    if outcome.status == "failed":
        return "failed"
    return "retried"


class StartFailed(Exception):
    """The start of a run could not be recorded (the database is unreachable): the job must not run."""


class StartBatcher:
    """Records runs as started, one statement for all the threads starting at the same moment (a group commit):
    a thread waits for the statement that covers its jobs, so no handler runs before its attempt is counted. The
    statements go over one connection the call keeps (no pool checkout and ping per start)."""

    def __init__(self, engine: Engine, token: str):
        self.engine, self.token = engine, token
        self._cond = threading.Condition()
        self._waiting: list[int] = []
        self._writing = False
        self._results: dict[int, tuple[bool, Optional[BaseException]]] = {}
        self._conn = None
        self._closed = False

    def start(self, job_ids: list[int]) -> set[int]:
        """The ids whose run is recorded (go); a missing one is no longer this call's (do not run it)."""
        with self._cond:
            self._waiting.extend(job_ids)
            while not all(job_id in self._results for job_id in job_ids):
                if self._writing:
                    self._cond.wait()
                    continue
                batch, self._waiting, self._writing = self._waiting, [], True
                self._cond.release()
                try:
                    marked, error = self._write(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                for waiting_id in batch:
                    self._results[waiting_id] = (waiting_id in marked, error)
                self._cond.notify_all()
            results = [self._results.pop(job_id) for job_id in job_ids]
        errors = [error for _, error in results if error is not None]
        if errors:
            raise StartFailed(str(errors[0])) from errors[0]
        return {job_id for job_id, (started, _) in zip(job_ids, results) if started}

    def _write(self, batch: list[int]) -> tuple[set[int], Optional[BaseException]]:
        try:
            if self._closed:  # the call has ended: a straggler's start on a connection of its own
                with self.engine.begin() as conn:
                    return queries.start(conn, self.token, batch), None
            if self._conn is None:
                self._conn = self.engine.connect()
            with self._conn.begin():
                return queries.start(self._conn, self.token, batch), None
        except Exception as exc:  # noqa: BLE001 - each waiting thread learns it
            self._drop()
            return set(), exc

    def close(self) -> None:
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is discarded by the pool
                pass


class _Gate:
    """A rate-limited lane's view of its limit: how long until it has room, read at most every GATE_READ_EVERY_S by
    one thread. Between readings every job let through is counted against the room it will use (one call's worth
    of budget), so the lane's threads do not all rush through on one reading and then wait in the limiter. A failed
    read opens the gate: the limiter itself still decides."""

    def __init__(self, read):
        self.read = read  # -> (seconds until a typical call may start, seconds of budget one call uses)
        self._lock = threading.Lock()
        self._wait, self._cost, self._at = 0.0, 0.0, float("-inf")
        self._reading = False

    def admit(self) -> float:
        """0: go (and count this job); else seconds to wait before asking again."""
        with self._lock:
            stale = time.monotonic() - self._at >= GATE_READ_EVERY_S and not self._reading
            self._reading = self._reading or stale
        if stale:  # one thread reads; the others go on with the last reading
            try:
                wait, cost = self.read()
            except Exception:  # the handler's own acquire copes with a limiter it cannot reach
                log.exception("could not read the rate limit's state")
                wait, cost = 0.0, 0.0
            with self._lock:
                self._wait, self._cost, self._at, self._reading = wait, cost, time.monotonic(), False
        with self._lock:
            wait = self._wait - (time.monotonic() - self._at)
            if wait <= GATE_S:
                self._wait = max(wait, 0.0) + self._cost + (time.monotonic() - self._at)
                return 0.0
            return wait - GATE_S


@dataclass
class _Lane:
    name: str
    target: int  # threads wanted now
    wakeup: threading.Condition  # on the call's lock: the lane's idle threads wait on it
    gate: Optional[_Gate] = None  # rate-limited lanes: start only when the limit has room soon
    threads: int = 0  # live threads counted (abandoned ones are not)
    busy: int = 0  # of which running a job
    ready: deque = field(default_factory=deque)  # claimed rows not started yet
    mean_run_s: Optional[float] = None  # mean successful run time in this call (an EWMA)
    gated_until: float = 0.0  # monotonic: its limit has no room before then (its free threads are not free)

    def load(self) -> runtime.LaneLoad:
        free = 0 if time.monotonic() < self.gated_until else max(0, self.target - self.busy)
        return runtime.LaneLoad(free=free, threads=self.target, ready=len(self.ready), mean_run_s=self.mean_run_s)


class _InFlight:
    """One run of jobs on one thread, as the coordinator sees it (self.in_flight): the job whose handler runs now and
    its deadline, and the outcomes and figures of the run's finished jobs. These are kept here, under a lock of the
    run's own, and handed over to the call when the run ends: a thread takes the call's lock once per run, not once
    per job (with microsecond jobs the lane threads queued on it, and the hand-offs cost more CPU than the jobs).
    The coordinator takes the run's lock (under the call's) to abandon its job, to take its outcomes for a flush
    that is due, and when the call ends; `closed`: it has taken the run over, and the thread writes whatever it
    still has itself."""

    __slots__ = ("lane", "metrics", "lock", "job_id", "deadline", "job_type", "closed",
                 "outcomes", "kinds", "since", "busy_s", "ended", "mean_first", "mean_decay", "mean_sum")

    def __init__(self, lane: _Lane, metrics: "_RunMetrics"):
        self.lane = lane
        self.metrics = metrics  # the run's: handed over by the coordinator when it abandons the run's job
        self.lock = threading.Lock()  # taken by the run's thread once per job; the call's lock, when taken, first
        self.job_id: Optional[int] = None  # the job whose handler runs (None: between two, or the run is over)
        self.deadline = 0.0  # monotonic
        self.job_type = ""
        self.closed = False
        self._clear()

    def _clear(self) -> None:
        self.outcomes: list[Outcome] = []
        self.kinds: dict[str, int] = {}
        self.since = 0.0  # monotonic: when the oldest of `outcomes` was kept
        self.busy_s = 0.0
        self.ended = 0.0
        # the run's successes, to be applied to the lane's mean (_next_mean() per success) as they would have been
        # one by one: m_k = decay * m_0 + sum, or mean_first when the lane had no mean yet
        self.mean_first: Optional[float] = None
        self.mean_decay, self.mean_sum = 1.0, 0.0

    def keep(self, outcome: Outcome, kind: str, elapsed: float, ended: float) -> None:
        """Under self.lock: a job of the run finished."""
        if not self.outcomes:
            self.since = ended
        self.outcomes.append(outcome)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.busy_s += elapsed
        self.ended = ended
        if kind == "succeeded":  # deferrals and failures are often quick: not what a round needs
            self.mean_first = _next_mean(self.mean_first, elapsed)
            self.mean_decay *= MEAN_DECAY
            self.mean_sum = _next_mean(self.mean_sum, elapsed)

    def hand_over(self, tick: "_Tick") -> None:
        """Under tick.cond and self.lock (or by the run's thread under tick.cond alone, its run over): what the run's
        finished jobs left, into the call's shared state."""
        if self.mean_first is not None:
            lane = self.lane
            lane.mean_run_s = (self.mean_first if lane.mean_run_s is None
                               else self.mean_decay * lane.mean_run_s + self.mean_sum)
        if self.outcomes:
            tick.busy_s += self.busy_s
            tick.last_activity = max(tick.last_activity, self.ended)
            tick.counts.update(self.kinds)
            if not tick.unflushed or self.since < tick.oldest_unflushed:
                tick.oldest_unflushed = self.since
            tick.unflushed.extend(self.outcomes)
            if len(tick.unflushed) >= FLUSH_EVERY_OUTCOMES:
                tick.cond.notify()
        self._clear()


class _RunMetrics:
    """The metrics of one run of jobs on one thread, written once when the run ends (metrics.observe_outcomes), and
    its successful run times, given to the call's RuntimeBook then too -- those that would change an estimate at
    once (a run longer than its percentile, a type not measured yet), so the start rule never waits for them. When
    the coordinator abandons the run's job (its handler hangs), it hands over what the run holds so far, so the call's
    last save of the book and the metrics have it even if the handler never returns."""

    def __init__(self, book: RuntimeBook) -> None:
        self.book = book
        # the run's thread adds without a lock (per job); a hand-over swaps the dicts out whole and reads them by
        # list() -- each one step under the GIL -- so at worst the run time of a handler returning at that very
        # moment is missed, never an error
        self.kinds: dict[str, Counter] = {}
        self.seconds: dict[str, list[float]] = {}
        self.succeeded: dict[str, list[float]] = {}

    def succeed(self, job_type: str, seconds: float) -> None:
        if self.book.changes_estimate(job_type, seconds):
            self.book.observe(job_type, seconds)
        else:
            self.succeeded.setdefault(job_type, []).append(seconds)

    def add(self, job_type: str, kind: str, seconds: float) -> None:
        kinds = self.kinds.get(job_type)
        if kinds is None:
            kinds = self.kinds[job_type] = Counter()
        kinds[kind] += 1
        self.seconds.setdefault(job_type, []).append(seconds)

    def observe_pending(self) -> None:
        """Give the book the run times kept back. Before the thread's last job of the run is recorded: the call may
        end (and save the book) as soon as no thread is busy."""
        succeeded, self.succeeded = self.succeeded, {}
        try:
            for job_type, runs in list(succeeded.items()):
                self.book.observe_many(job_type, list(runs))
        except Exception:  # the estimates are an optimisation: they must not cost the jobs their outcomes
            log.exception("could not add a run's run times to the estimates")

    def write(self) -> None:
        """Everything the run holds so far: its run times to the book, its outcomes to the metrics."""
        self.observe_pending()
        kinds, seconds = self.kinds, self.seconds
        self.kinds, self.seconds = {}, {}
        try:
            for job_type, counts in list(kinds.items()):
                observe_outcomes(job_type, counts, list(seconds.get(job_type, ())))
        except Exception:  # the metrics must not cost the jobs their outcomes
            log.exception("could not count a run's outcomes in the metrics")


class _Tick:
    """One call: the coordinator (the request's thread) claims rounds and writes outcomes; lane threads run jobs."""

    def __init__(self, engine: Engine, settings: Settings, token: str, *, limit: int, budget_s: float,
                 job_type: Optional[str], app):
        self.engine, self.settings, self.token, self.app = engine, settings, token, app
        self.limit, self.budget_s, self.job_type = limit, budget_s, job_type
        self.started = time.monotonic()
        self.budget_end = self.started + budget_s
        self.answer_by = self.budget_end + GRACE_S
        self.keeper: LeaseKeeper = keeper_for(engine, settings.JOBS_LEASE_S)
        self.book = RuntimeBook(engine, budget_s)
        self.starts = StartBatcher(engine, token)
        self.maintenance = TickMaintenance(engine, settings)
        # one lock; the coordinator waits on `cond`, each lane's idle threads on their lane's `wakeup`, so a job
        # finishing wakes only whoever has something to do about it
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.lanes: dict[str, _Lane] = {CPU_LANE: _Lane(CPU_LANE, settings.JOBS_CONCURRENCY,
                                                        threading.Condition(self.lock))}
        self.in_flight: set[_InFlight] = set()  # the runs of jobs under way that the coordinator has not taken over
        self.abandoned: set[int] = set()  # the jobs whose handlers were running when their run was taken over
        self.unflushed: list[Outcome] = []
        self.oldest_unflushed = 0.0
        self.counts: Counter = Counter()
        self.stores: Counter = Counter()
        self.claimed = 0
        self.rounds = 0
        self.rescued = 0
        self.tick_id: Optional[int] = None
        self.busy_s = 0.0
        self.stopping = False  # no job starts any more
        self.claiming = True  # the call may claim more rounds
        self.dry_since: Optional[float] = None  # since when claims have found nothing due
        self.last_empty_claim = 0.0
        self.next_due: Optional[float] = None  # monotonic: when the next pending job falls due (asked when dry)
        self.last_activity = self.started
        self.spec_cache: dict[str, Optional[HandlerSpec]] = {}
        self.type_facts: dict[str, tuple[Optional[HandlerSpec], float]] = {}
        self.run_facts = {cut: Run(cut_by_budget=cut, deferred_since=None, max_deferrals=settings.JOBS_MAX_DEFERRALS,
                                   max_deferral_s=settings.JOBS_MAX_DEFERRAL_S,
                                   max_result_bytes=settings.MAX_RESULT_BYTES) for cut in (False, True)}
        self.schedules_enqueued = False
        # a process claims only the types it has handlers for (the call's `type` filter: that one)
        self.types = [job_type] if job_type else registered_types()

    # -- the coordinator ----------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            # the call fails (a claim's or an outcome's write failed twice): no further job starts; running
            # handlers record their own outcomes (as abandoned ones do); what was not started waits for its lease
            with self.cond:
                self.stopping = True
                self.claiming = False
                for flight in self.in_flight:
                    with flight.lock:
                        flight.closed = True
                        if flight.job_id is not None:
                            self._abandon_job(flight)
                        flight.hand_over(self)
                self.in_flight.clear()
                # what this call can no longer write is let go: its leases run out and the jobs come back
                unwritten = [o.job_id for o in self.unflushed]
                unwritten += [row.id for lane in self.lanes.values() for row in lane.ready]
                self.unflushed = []
                self._wake_all()
            self.keeper.release(unwritten)
            raise

    def _run(self) -> None:
        first = self._claim_round(first=True)
        if first == 0 and not self.schedules_enqueued:
            return  # nothing due: the claim statement recorded the tick, final (one statement in all)
        while True:
            now = time.monotonic()
            with self.cond:
                self._abandon_overdue(now)
                if self._finished(now):
                    break
                batch = self._take_flush(now)
            if batch:
                self._flush(batch)
                continue
            want = self._want_round(time.monotonic())
            if want > 0:
                self._claim_round(size=want)
                continue
            with self.cond:
                self.cond.wait(timeout=self._sleep_for(time.monotonic()))
        with self.cond:
            self.stopping = True
            self.claiming = False
            for lane in self.lanes.values():
                while lane.ready:
                    self._release(lane.ready.popleft())
            for flight in self.in_flight:
                self._take_over(flight)
                flight.metrics.write()  # before the book's last save below
            self.in_flight.clear()
            self.counts["abandoned"] = len(self.abandoned)
            batch, self.unflushed = self.unflushed, []
            self._wake_all()
        self._flush(batch)
        self.book.save(final=True)
        paces = [lane.mean_run_s for lane in self.lanes.values() if lane.mean_run_s is not None]
        runtimes.remember_call(self.engine, self.book, max(paces) if paces else None)

    def _finished(self, now: float) -> bool:
        """Under self.cond: the call is over (nothing left to run, or its time is up)."""
        if now >= self.answer_by:
            return True
        if self.in_flight or any(lane.ready or lane.busy for lane in self.lanes.values()):
            return False
        if not self.claiming:
            return True
        if self.dry_since is not None:  # the queue ran dry and everything claimed has finished
            grace = self.settings.JOBS_IDLE_GRACE_S
            if now - max(self.dry_since, self.last_activity) < grace:
                return False
            # a job falling due within another grace (a retry, a rescheduled call) is work this call still does
            return self.next_due is None or self.next_due > min(now + grace, self.budget_end - MIN_CLAIM_LEFT_S)
        return False

    def _sleep_for(self, now: float) -> float:
        wake = now + POLL_S
        if self.unflushed:
            wake = min(wake, self.oldest_unflushed + FLUSH_EVERY_S)
        for flight in self.in_flight:  # read without the run's lock: at worst one job stale, and woken again soon
            if flight.outcomes:
                wake = min(wake, flight.since + FLUSH_EVERY_S)
            if flight.job_id is not None:
                wake = min(wake, flight.deadline + GRACE_S)
        return max(0.005, min(wake, self.answer_by) - now)

    def _want_round(self, now: float) -> int:
        """How many jobs to claim now (0: none)."""
        with self.cond:
            if not self.claiming:
                return 0
            left = self.budget_end - now
            if self.claimed >= self.limit or left < MIN_CLAIM_LEFT_S:
                self.claiming = False
                self._wake_all()
                return 0
            if self.dry_since is not None and now - self.last_empty_claim < POLL_S:
                return 0
            return runtime.round_size([lane.load() for lane in self.lanes.values()], horizon_s=PREFETCH_HORIZON_S,
                                      left=self.limit - self.claimed, max_round=MAX_ROUND)

    def _claim_types(self, now: float) -> list[str]:
        """Under self.cond: the types this round asks for — the process's own, less those that no longer fit in
        what is left of the budget and those whose lane already has its prefetch waiting (or its limit no room)."""
        left = self.budget_end - now
        wanted = []
        for job_type in self.types:
            spec = self._spec(job_type)
            if spec is None or not runtime.may_start(self.book.estimate(job_type, self._timeout(spec)), left):
                continue
            lane = self.lanes.get(spec.rate_limited or CPU_LANE)
            if lane is not None and lane.name != CPU_LANE:
                load = lane.load()
                if load.free == 0 and load.ready >= runtime.prefetch(load, PREFETCH_HORIZON_S):
                    continue
            wanted.append(job_type)
        return wanted

    def _claim_round(self, *, size: Optional[int] = None, first: bool = False) -> int:
        """Claim one round; returns how many jobs it claimed."""
        with self.cond:
            if first:
                # the first round reads no estimate (a call with nothing due is one statement): it is sized by what
                # this process's recent calls measured, as a later round would be, and starts the quick types itself
                types = self.types
                size = runtime.first_round_size([lane.load() for lane in self.lanes.values()],
                                                runtimes.recent_pace(self.engine), horizon_s=PREFETCH_HORIZON_S,
                                                left=self.limit, max_round=MAX_ROUND)
                quick = runtimes.recently_quick(self.engine, types, START_AHEAD_S)
            else:
                types = self._claim_types(time.monotonic())
            if not types:  # nothing this process handles can start in what is left, or every lane is full: as dry
                self.last_empty_claim = time.monotonic()
                if self.dry_since is None:
                    self.dry_since = self.last_empty_claim
                return 0
            # types measured to take a few milliseconds are started by the claim itself (queries._CLAIMED_CTE)
            if not first:
                quick = [t for t in types if (self.book.mean(t) or START_AHEAD_S) < START_AHEAD_S]
        tick = queries.TickStart(self.limit, self.budget_s, self.job_type) if first else None
        try:
            with self.engine.begin() as conn:
                claim = queries.claim(conn, limit=size, worker=self.token, lease_s=self.settings.JOBS_LEASE_S,
                                      job_types=types, rescue_limit=self.settings.JOBS_RESCUE_LIMIT,
                                      max_per_store=self.settings.JOBS_MAX_PER_STORE, tick=tick, start_types=quick)
        except Exception:
            if first:
                raise  # nothing claimed yet: the caller answers 503
            log.exception("a claim round failed; the call finishes the jobs it holds and claims no more")
            with self.cond:
                self.claiming = False
                self._wake_all()
            return 0
        rows = claim.jobs
        if first:
            self.tick_id = claim.tick_id
        observe_claimed((row.type for row in rows), claim.rescued)
        if rows:
            self.keeper.hold([row.id for row in rows], self.token, self.answer_by + GRACE_S)
            self.book.ensure_loaded(self.types)  # one statement, once: the estimates of every type it may claim
        maintained = self.maintenance.after_claim(claim)
        self.rescued += maintained.rescued.rescued
        # recurring jobs just enqueued are the next round's work, so this empty round does not make the queue dry
        enqueued_now = maintained.enqueued > 0
        now = time.monotonic()
        with self.cond:
            if enqueued_now:
                self.schedules_enqueued = True
                self.dry_since = None
            if rows:
                self.rounds += 1
                self.claimed += len(rows)
                self.dry_since = None
                self.last_activity = now
                self._admit(rows, now)
            elif not enqueued_now:
                self.last_empty_claim = now
                if self.dry_since is None:
                    self.dry_since = now
        if not rows and not first:
            self._look_ahead()
            with self.cond:  # (claiming may have stopped meanwhile: a thread could not record a start)
                if not self.claiming:
                    self._wake_all()
        return len(rows)

    def _look_ahead(self) -> None:
        """The queue is dry: when does the next pending job fall due? Best effort (one cheap statement)."""
        try:
            with self.engine.connect() as conn:
                due_in = queries.next_due_in_s(conn)
        except Exception:  # without it the call just ends after its idle grace
            log.exception("could not read when the next job falls due")
            due_in = None
        with self.cond:
            self.next_due = None if due_in is None else time.monotonic() + due_in

    def _spec(self, job_type: str) -> Optional[HandlerSpec]:
        if job_type not in self.spec_cache:
            self.spec_cache[job_type] = get_handler(job_type)
        return self.spec_cache[job_type]

    def _timeout(self, spec: Optional[HandlerSpec]) -> float:
        return (spec.timeout_s if spec and spec.timeout_s else None) or self.settings.JOBS_DEFAULT_TIMEOUT_S

    def _type_facts(self, job_type: str) -> tuple[Optional[HandlerSpec], float]:
        """The type's handler and timeout (asked for every job: kept once per call)."""
        facts = self.type_facts.get(job_type)
        if facts is None:
            spec = self._spec(job_type)
            facts = self.type_facts[job_type] = (spec, self._timeout(spec))
        return facts

    def _lane_for(self, spec: Optional[HandlerSpec]) -> _Lane:
        """Under self.cond."""
        if spec is None or spec.rate_limited is None:
            return self.lanes[CPU_LANE]
        lane = self.lanes.get(spec.rate_limited)
        if lane is None:
            limit = spec.rate_limited
            lane = self.lanes[limit] = _Lane(
                limit, 1, threading.Condition(self.lock),
                gate=_Gate(lambda: gate.for_limit(limit, self.engine, self.settings)))
        lane.target = self._rate_limited_target(spec)
        return lane

    def _rate_limited_target(self, spec: HandlerSpec) -> int:
        rate_per_s = self.settings.OPENAI_RPM / 60.0  # the one shared limit today (handler_registry.RATE_LIMITS)
        return runtime.rate_limited_threads(rate_per_s, self.book.mean(spec.type),
                                            cap=self.settings.JOBS_MAX_IO_CONCURRENCY, timeout_s=self._timeout(spec))

    def _admit(self, rows: list, now: float) -> None:
        """Under self.cond: route claimed rows to their lanes (giving back at once those that cannot start in what
        is left of the budget, or that have no handler here), then start threads where jobs wait."""
        misfits = 0
        lanes: dict[str, Optional[_Lane]] = {}  # per type, for this round: its lane, None if it cannot start
        self.stores.update(row.store_id or NO_STORE for row in rows)
        for row in rows:
            job_type = row.type
            if job_type not in lanes:
                spec = self._spec(job_type)
                fits = spec is not None and runtime.may_start(self.book.estimate(job_type, self._timeout(spec)),
                                                              self.budget_end - now)
                lanes[job_type] = lane = self._lane_for(spec) if fits else None
                if lane is not None and lane.mean_run_s is None:
                    lane.mean_run_s = self.book.mean(job_type)  # measured by earlier calls: rounds sized right
            lane = lanes[job_type]
            if lane is None:
                self._release(row)
                misfits += 1
                continue
            lane.ready.append(row)
        if misfits == len(rows):
            # nothing of this round could start, and the budget only shrinks: claiming more would give back the
            # same jobs again (a claim cannot yet leave out the types that no longer fit)
            self.claiming = False
        for lane in self.lanes.values():
            self._staff(lane)

    def _wake_all(self) -> None:
        """Under self.cond: something every thread must see (the call stops claiming or starting)."""
        self.cond.notify_all()
        for lane in self.lanes.values():
            lane.wakeup.notify_all()

    def _staff(self, lane: _Lane) -> None:
        """Under self.cond: wake idle threads for the jobs waiting, and start threads while jobs wait with no idle
        thread to take them."""
        if lane.ready:
            lane.wakeup.notify(len(lane.ready))
        while lane.ready and lane.threads < lane.target and lane.threads - lane.busy < len(lane.ready):
            lane.threads += 1
            threading.Thread(target=self._worker, args=(lane,), name=f"job-{lane.name}-{self.token[-6:]}",
                             daemon=True).start()

    def _release(self, row) -> None:
        """Under self.cond: give a claimed job back unstarted, as it was (place in line, attempts; a job the claim
        had started gets its attempt back)."""
        self._record(Outcome(row.id, "pending", delay_s=None, give_back_attempt=bool(row.started)), "released")
        observe_released(row.type)

    def _abandon_overdue(self, now: float) -> None:
        """Under self.cond."""
        for flight in [f for f in self.in_flight if f.job_id is not None and now > f.deadline + GRACE_S]:
            # overran its deadline: stop waiting, keep the lane's concurrency
            if not self._take_over(flight, overdue_at=now):
                continue  # its job ended meanwhile (the next one has a deadline of its own)
            self.in_flight.discard(flight)
            flight.metrics.write()  # what the run's earlier jobs measured, in case its handler never returns
            flight.lane.threads -= 1
            flight.lane.busy -= 1
            self._staff(flight.lane)

    def _take_over(self, flight: _InFlight, overdue_at: Optional[float] = None) -> bool:
        """Under self.cond: close a run (its thread writes what it still has itself) and take what its finished jobs
        left; the job whose handler runs is abandoned. With `overdue_at`, only if that job is still past its deadline
        + GRACE_S then. False: it was not (the caller leaves the run alone)."""
        with flight.lock:
            if overdue_at is not None and (flight.job_id is None or overdue_at <= flight.deadline + GRACE_S):
                return False
            flight.closed = True
            if flight.job_id is not None:
                self._abandon_job(flight)
                observe_abandoned(flight.job_type)
            flight.hand_over(self)
        return True

    def _abandon_job(self, flight: _InFlight) -> None:
        """Under self.cond and the run's lock: the call stops waiting for the job whose handler runs; its thread
        writes the outcome late. Its lease is held from now on while that thread lives, up to JOBS_STUCK_HANDLER_S
        past its deadline, not only as long as the call's hold (set here, not as each job starts: a job whose handler
        returns in time never needs it, and quick jobs paid a lock per job for it)."""
        self.abandoned.add(flight.job_id)
        self.keeper.hold_until(flight.job_id, flight.deadline + self.settings.JOBS_STUCK_HANDLER_S)

    def _take_flush(self, now: float) -> list:
        """Under self.cond: the outcomes to write now, if it is time (with those the runs under way still keep)."""
        due = self.unflushed and (len(self.unflushed) >= FLUSH_EVERY_OUTCOMES
                                  or now - self.oldest_unflushed >= FLUSH_EVERY_S)
        due = due or any(f.outcomes and now - f.since >= FLUSH_EVERY_S for f in self.in_flight)
        if not due:
            return []
        for flight in self.in_flight:
            with flight.lock:
                flight.hand_over(self)
        batch, self.unflushed = self.unflushed, []
        return batch

    def _record(self, outcome: Outcome, kind: str) -> None:
        """Under self.cond."""
        if not self.unflushed:
            self.oldest_unflushed = time.monotonic()
        self.unflushed.append(outcome)
        self.counts[kind] += 1
        if len(self.unflushed) >= FLUSH_EVERY_OUTCOMES:
            self.cond.notify()

    def _flush(self, batch: list[Outcome]) -> None:
        if not batch:
            return
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    written = queries.finish(conn, self.token, batch)
                break
            except Exception:
                if attempt == 2:
                    # the jobs stay `running` under this call's lease until it runs out; then they come back
                    log.exception("could not record %d outcomes; their leases will expire and they will rerun",
                                  len(batch))
                    self.keeper.release([o.job_id for o in batch])
                    raise
                time.sleep(0.2)
        self.counts["lost"] += len(batch) - len(written)
        self.keeper.release([o.job_id for o in batch])
        self.book.save()

    # -- lane threads -------------------------------------------------------------------------------------------

    def _take_run(self, lane: _Lane):
        """Under self.cond: the jobs this thread runs next, one after the other: the first job waiting, and, when
        the lane's jobs are measured to be quick, the ones after it that fit in START_AHEAD_S of expected work (one
        start statement for the lot: a thread marking one job per round trip could not keep up with jobs that take
        microseconds). None: the thread ends."""
        while True:
            if self.stopping or lane.threads > lane.target and not lane.ready:
                return None
            if not lane.ready:
                if not self.claiming:
                    return None
                self.cond.notify()  # this thread is idle: the coordinator may want to claim a round
                lane.wakeup.wait(timeout=POLL_S)
                continue
            run, ahead = [], 0.0
            means: dict[str, Optional[float]] = {}  # per type, for this run
            while lane.ready and len(run) < MAX_RUN:
                row = lane.ready[0]
                job_type = row.type
                if job_type not in means:
                    means[job_type] = self.book.mean(job_type)
                if run:
                    mean = means[job_type]
                    if mean is None or ahead + mean > START_AHEAD_S:
                        break
                    ahead += mean
                lane.ready.popleft()
                if not run and not self._fits(row):
                    self._release(row)
                    continue
                run.append(row)
                if len(run) == 1:
                    ahead = means[job_type] or START_AHEAD_S
                    if ahead >= START_AHEAD_S:
                        break
            if len(lane.ready) <= max(1, lane.target // 2):
                self.cond.notify()  # the coordinator may want to claim the next round before threads idle
            if run:
                lane.busy += 1
                return run

    def _fits(self, row) -> bool:
        """The start rule, now (the book and the type facts are safe to read without self.cond)."""
        timeout_s = self._type_facts(row.type)[1]
        return runtime.may_start(self.book.estimate(row.type, timeout_s), self.budget_end - time.monotonic())

    def _wait_for_room(self, lane: _Lane) -> bool:
        """A rate-limited lane's thread waits (holding no job) until its limit has room soon. False: the thread
        ends (the call stops, or has nothing left for it)."""
        while True:
            wait = lane.gate.admit()
            if wait <= 0:
                return True
            with self.cond:
                lane.gated_until = time.monotonic() + wait
                if self.stopping or (not self.claiming and not lane.ready):
                    return False
                lane.wakeup.wait(timeout=min(POLL_S, wait))

    def _worker(self, lane: _Lane) -> None:
        with (self.app.app_context() if self.app is not None else nullcontext()):
            try:
                while True:
                    if lane.gate is not None and not self._wait_for_room(lane):
                        with self.cond:
                            lane.threads -= 1
                            self.cond.notify()
                        return
                    with self.cond:
                        run = self._take_run(lane)
                        if run is None:
                            lane.threads -= 1
                            self.cond.notify()
                            return
                    if not self._run_jobs(lane, run):
                        return  # abandoned meanwhile: this thread is no longer the lane's
            except BaseException:
                log.exception("a handler thread of call %s failed", self.token)
                raise

    def _run_jobs(self, lane: _Lane, run: list) -> bool:
        """Start, perform and record a run of jobs. False: the coordinator abandoned one of them meanwhile (this
        thread wrote its outcome, and gave back the rest of the run, itself, and must stop). The run's outcomes
        are counted in the metrics when it ends."""
        counted = _RunMetrics(self.book)
        try:
            return self._run_started(lane, run, counted)
        finally:
            counted.write()

    def _run_started(self, lane: _Lane, run: list, counted: "_RunMetrics") -> bool:
        ids = [row.id for row in run]
        try:
            to_start = [row.id for row in run if not row.started]
            started = (self.starts.start(to_start) if to_start else set()) | {r.id for r in run if r.started}
        except StartFailed:
            log.exception("could not record the start of jobs %s; they are given back unstarted", ids)
            with self.lock:
                lane.busy -= 1
                for row in run:
                    self._release(row)
                self.claiming = False
            return True
        lost = [job_id for job_id in ids if job_id not in started]
        if lost:
            self.keeper.release(lost)
            with self.lock:
                self.counts["lost"] += len(lost)
        rows = [row for row in run if row.id in started] if lost else run
        if not rows:
            with self.lock:
                lane.busy -= 1
            return True
        flight = _InFlight(lane, counted)  # the run's entry in self.in_flight, moved from job to job
        with self.lock:
            stop = self.stopping
            if stop:
                lane.busy -= 1
            else:
                self.in_flight.add(flight)
                plan = self._begin(flight, rows[0])
        if stop:  # the call stopped while the run's start was written: back, attempt given back
            counted.observe_pending()
            self._write_give_backs(rows)
            return True
        i = 0
        while True:
            spec, deadline_s, cut = plan
            outcome, kind, elapsed, ended = self._perform(rows[i], spec, deadline_s, cut, counted)
            i += 1
            # the start rule for the next job, before taking the run's lock (it reads nothing the lock guards)
            fits = i < len(rows) and self._fits(rows[i])
            # one acquisition of the run's own lock between two jobs: the outcome of one and the start of the next
            with flight.lock:
                late = flight.closed  # the coordinator abandoned the job (or the call ended under it)
                if not late:
                    flight.keep(outcome, kind, elapsed, ended)
                    plan = self._begin(flight, rows[i]) if fits and not self.stopping else None
                    if plan is None:
                        flight.job_id = None
            if late:
                counted.observe_pending()
                with self.lock:  # its time still counts in the call's figures, as any job's
                    self.busy_s += elapsed
                    self.last_activity = max(self.last_activity, ended)
                    if kind == "succeeded":
                        lane.mean_run_s = _next_mean(lane.mean_run_s, elapsed)
                self._write_late([outcome])
                self._write_give_backs(rows[i:])
                return False
            if plan is None:  # the run is over; or the call stops, or the rest no longer fits: back, attempt given back
                counted.observe_pending()  # before the run's last outcome is the call's: the call may end then
                return self._end_run(flight, rows[i:])

    def _begin(self, flight: _InFlight, row) -> tuple:
        """Under the run's lock (or the call's, before the run is in self.in_flight): a job of the run starts now:
        its handler, deadline and whether the budget set it."""
        spec, timeout_s = self._type_facts(row.type)
        now = time.monotonic()
        deadline_s, cut = runtime.deadline(timeout_s, self.budget_end - now)
        flight.deadline, flight.job_type, flight.job_id = now + deadline_s, row.type, row.id
        return spec, deadline_s, cut

    def _end_run(self, flight: _InFlight, rest: list) -> bool:
        """A run's thread, its last job recorded in the run: hand the run over to the call, and give back the jobs
        of it that will not run now. False: the coordinator had taken the run over meanwhile (the call ended): the
        thread writes the give-backs itself, and stops."""
        outcomes = self._give_back_outcomes(rest)
        with self.lock:
            taken = flight.closed
            if not taken:  # the coordinator takes the run's lock only under this one: the run is the thread's
                flight.hand_over(self)
                flight.closed = True
                self.in_flight.discard(flight)
                for outcome in outcomes:
                    self._record(outcome, "released")
                flight.lane.busy -= 1
        if taken and outcomes:
            self._write_late(outcomes)
        return not taken

    @staticmethod
    def _give_back_outcomes(rows: list) -> list[Outcome]:
        """The outcomes of jobs of a run that were marked started but will not run now: pending again, as they were,
        with their attempt given back."""
        for row in rows:
            observe_released(row.type)
        return [Outcome(row.id, "pending", delay_s=None, give_back_attempt=True) for row in rows]

    def _write_give_backs(self, rows: list) -> None:
        """Give back jobs of a run, written by this thread itself: the coordinator may have written its last batch
        (the call stops, or it abandoned this thread)."""
        outcomes = self._give_back_outcomes(rows)
        if outcomes:
            self._write_late(outcomes)

    def _perform(self, row, spec, deadline_s: float, cut: bool,
                 counted: "_RunMetrics") -> tuple[Outcome, str, float, float]:
        """Run one job: its outcome, the outcome's kind, the handler's seconds and when it ended (monotonic)."""
        job = job_from_row(row, deadline_s=deadline_s,
                           steps=StepStore(self.engine, row.id, self.settings.JOBS_MAX_STEP_BYTES))
        handler_started = time.monotonic()
        outcome = execute(job, spec, self._run_facts(cut, row.deferred_since))
        ended = time.monotonic()
        elapsed = ended - handler_started
        kind = _kind(outcome)
        try:
            if kind == "succeeded":
                counted.succeed(row.type, elapsed)
            counted.add(row.type, kind, elapsed)
            if self.app is not None and _session_left(db.session.registry):
                db.session.remove()  # a handler's own session never outlives its job
        except Exception:  # bookkeeping must not cost the job its outcome
            log.exception("after job %s: metrics or session clean-up failed", row.id)
        return outcome, kind, elapsed, ended

    def _run_facts(self, cut: bool, deferred_since) -> Run:
        """What execute() needs besides the job; the same for most jobs of a call, so made once for those."""
        if deferred_since is None:
            return self.run_facts[cut]
        return Run(cut_by_budget=cut, deferred_since=deferred_since, max_deferrals=self.settings.JOBS_MAX_DEFERRALS,
                   max_deferral_s=self.settings.JOBS_MAX_DEFERRAL_S, max_result_bytes=self.settings.MAX_RESULT_BYTES)

    def _write_late(self, outcomes: list[Outcome]) -> None:
        ids = [o.job_id for o in outcomes]
        try:
            with self.engine.begin() as conn:
                written = queries.finish(conn, self.token, outcomes)
            log.info(json.dumps({"event": "late_outcome", "job_ids": ids, "statuses": [o.status for o in outcomes],
                                 "written": len(written), "worker": self.token}))
        except Exception:  # the lease will bring the jobs back
            log.exception("could not record the late outcome of jobs %s; their leases will expire", ids)
        finally:
            self.keeper.release(ids)
        self.book.save(final=True)  # a late outcome: the call has ended

    # -- the result ---------------------------------------------------------------------------------------------

    def summary(self) -> RunSummary:
        summary = RunSummary(claimed=self.claimed, rescued=self.rescued, rounds=self.rounds, worker=self.token,
                             stores=dict(self.stores))
        for name in ("succeeded", "retried", "failed", "released", "abandoned", "lost"):
            setattr(summary, name, self.counts[name])
        summary.duration_ms = int((time.monotonic() - self.started) * 1000)
        return summary

    def record_tick(self, summary: RunSummary) -> None:
        """Write the call's figures into its job_ticks row (the first claim inserted it). Best effort."""
        if self.tick_id is None or (self.claimed == 0 and self.rescued == 0 and not self.schedules_enqueued):
            return  # nothing happened after the first claim: its row is already final
        try:
            with self.engine.begin() as conn:
                ticks.finish(conn, self.tick_id, asdict(summary), self.busy_s)
        except Exception:  # the outcomes are written; the history misses one row's figures
            log.exception("could not record tick %s", self.tick_id)


def process_pending(engine: Engine, settings: Settings, *, limit: int, budget_s: float,
                    job_type: Optional[str] = None, app=None) -> RunSummary:
    """Claim and run due jobs in rounds for up to `budget_s` seconds, at most `limit` of them. The endpoint and the
    CLI call this."""
    token = worker_token()
    if not ticks.GATE.try_enter(settings.JOBS_MAX_TICKS_PER_PROCESS):
        observe_tick("busy", 0.0)
        return RunSummary(worker=token, busy=True)
    try:
        tick = _Tick(engine, settings, token, limit=limit, budget_s=budget_s, job_type=job_type, app=app)
        try:
            tick.run()
        finally:
            tick.starts.close()
        summary = tick.summary()
        tick.record_tick(summary)
    finally:
        ticks.GATE.leave()
    observe_tick("ran" if summary.claimed else "idle", summary.duration_ms / 1000.0)
    log.info(json.dumps({"event": "process_pending", **summary.to_dict(), "limit": limit, "budget_s": budget_s,
                         "busy_s": round(tick.busy_s, 3),
                         "distribution": f"claimed {summary.claimed} from {len(summary.stores)} stores",
                         "type": job_type}))
    return summary
