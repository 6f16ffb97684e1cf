"""Recent run times per job type, shared by every process and instance (table job_type_runtimes,
sql/057_job_type_runtimes_v1.sql), and one call's view of them.

A call reads the rows of the types it claims once, adds the run times of its own successful jobs as they finish
(so its first wave already informs the rest of the call), and appends a sample of them to the shared rows each time
it writes outcomes. jobprocessor/policies/runtime.py turns the samples into estimates.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import defaultdict
from typing import Iterable, Optional, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .policies import runtime
from .policies.runtime import Estimate

log = logging.getLogger("jobprocessor.runtimes")

# A call asks for a type's estimate several times per job (admit, start rule, runs of quick jobs): the book computes
# it from the samples at most this often, or at once when a new run is longer than the percentile it was computed
# from. Runs no longer than that percentile cannot raise it, so the estimate the book answers is never below a fresh
# one (the start rule stays on the safe side); it may stay higher for up to REFRESH_S.
REFRESH_S = 0.05
SAVE_EVERY_S = 1.0  # a call appends its samples to the shared rows at most this often (and when it ends)

LOAD = "SELECT type, recent_s FROM job_type_runtimes WHERE type = ANY(CAST(:types AS text[]))"

# One statement for every type of a batch. The newest SAMPLES_KEPT samples stay (the array is cut from the front).
# Rows are written in type order, so two calls appending to the same types never deadlock each other.
APPEND = """
INSERT INTO job_type_runtimes AS t (type, recent_s, runs, updated_at)
SELECT u.type, ARRAY(SELECT CAST(x AS real) FROM jsonb_array_elements_text(u.samples) AS x), u.runs, now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(type text, samples jsonb, runs bigint)
ORDER BY u.type
ON CONFLICT (type) DO UPDATE SET
    recent_s = (t.recent_s || excluded.recent_s)[greatest(1, cardinality(t.recent_s || excluded.recent_s)
                                                             - CAST(:keep AS integer) + 1):],
    runs = t.runs + excluded.runs,
    updated_at = now()
"""


def load(engine: Engine, job_types: Iterable[str]) -> dict[str, list[float]]:
    types = sorted(set(job_types))
    if not types:
        return {}
    from .pgarray import array_literal

    with engine.connect() as conn:
        rows = conn.execute(text(LOAD), {"types": array_literal(types)}).all()
    return {row.type: [float(x) for x in row.recent_s] for row in rows}


def append(engine: Engine, samples: dict[str, Sequence[float]], runs: dict[str, int]) -> None:
    rows = [{"type": t, "samples": [round(float(x), 6) for x in samples[t]], "runs": runs.get(t, len(samples[t]))}
            for t in sorted(samples) if samples[t]]
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(text(APPEND), {"rows": json.dumps(rows), "keep": runtime.SAMPLES_KEPT})


# This process's memory of its recent calls (per engine: a new engine starts with nothing remembered; forgotten after
# QUICK_MEMORY_S). A call's first claim is made before it reads any estimate; from this memory it starts the jobs
# of the types measured quick itself, as later rounds do (a separate start statement per call otherwise), and it is
# sized by the pace of the last call's jobs, as a later round would be (a call of 1,000 quick jobs is one claim,
# not a round for the free threads and then the rest).
QUICK_MEMORY_S = 60.0


class _Memory:
    __slots__ = ("means", "pace")

    def __init__(self) -> None:
        self.means: dict[str, tuple[float, float]] = {}  # type -> (monotonic time seen, mean run time s)
        self.pace: Optional[tuple[float, float]] = None  # (monotonic time, the last call's slowest lane mean s)


_memory: "weakref.WeakKeyDictionary[Engine, _Memory]" = weakref.WeakKeyDictionary()
_memory_lock = threading.Lock()  # calls of one process end concurrently


def remember_call(engine: Engine, book: "RuntimeBook", pace_s: Optional[float]) -> None:
    """At the end of a call: the mean run time of each type the book has one for (its own runs and the shared
    ones), and the pace of the jobs it ran (its slowest lane's mean; None: it ran none to completion, and the pace
    remembered before stays)."""
    now = time.monotonic()
    means = {t: (now, mean) for t in book.known_types() if (mean := book.mean(t)) is not None}
    with _memory_lock:
        memory = _memory.get(engine)
        if memory is None:
            memory = _memory[engine] = _Memory()
        memory.means.update(means)
        if pace_s is not None:
            memory.pace = (now, pace_s)


def recently_quick(engine: Engine, job_types: Iterable[str], quick_s: float) -> list[str]:
    """Those of `job_types` whose mean run time, measured within QUICK_MEMORY_S, is under quick_s."""
    now = time.monotonic()
    with _memory_lock:
        memory = _memory.get(engine)
        means = dict(memory.means) if memory is not None else {}
    return [t for t in job_types if t in means and now - means[t][0] < QUICK_MEMORY_S and means[t][1] < quick_s]


def recent_pace(engine: Engine) -> Optional[float]:
    """The slowest lane mean of this process's last call that ran jobs, if within QUICK_MEMORY_S."""
    with _memory_lock:
        memory = _memory.get(engine)
        pace = memory.pace if memory is not None else None
    if pace is None or time.monotonic() - pace[0] >= QUICK_MEMORY_S:
        return None
    return pace[1]


class RuntimeBook:
    """One call's estimates: the shared samples (read once per type) plus the call's own, and what is still to be
    appended to the shared rows. Thread-safe."""

    def __init__(self, engine: Engine, budget_s: float):
        self.engine, self.budget_s = engine, budget_s
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {}
        self._unsaved: dict[str, list[float]] = defaultdict(list)
        self._runs: dict[str, int] = defaultdict(int)
        # type -> (the samples' estimate with no timeout bound, when computed); dropped when it is stale
        self._cached: dict[str, tuple[Estimate, float]] = {}
        self._bounded: dict[tuple[str, float], tuple[Estimate, Estimate]] = {}  # (type, timeout) -> (from, bounded)
        self._saved_at = time.monotonic()  # a call shorter than SAVE_EVERY_S saves once, when it ends

    def ensure_loaded(self, job_types: Iterable[str]) -> None:
        """Read the shared samples of types this call has not seen yet (one statement)."""
        with self._lock:
            missing = {t for t in job_types if t not in self._samples}
        if not missing:
            return
        try:
            shared = load(self.engine, missing)
        except Exception:  # without the shared figures the call still works, on timeouts
            log.exception("could not read the run-time estimates of %s", sorted(missing))
            shared = {}
        with self._lock:
            for job_type in missing:
                if job_type not in self._samples:
                    self._samples[job_type] = shared.get(job_type, [])
                    self._cached.pop(job_type, None)

    def _unbounded(self, job_type: str) -> Estimate:
        """Under self._lock: the estimate of the samples alone (timeout and budget infinite), cached."""
        cached = self._cached.get(job_type)
        now = time.monotonic()
        if cached is not None and now - cached[1] < REFRESH_S:
            return cached[0]
        found = runtime.estimate(self._samples.get(job_type, ()), float("inf"), float("inf"))
        self._cached[job_type] = (found, now)
        return found

    def estimate(self, job_type: str, timeout_s: float) -> Estimate:
        # asked before every start: a fresh cached answer is read without the lock (one dict read each of immutable
        # tuples, atomic under the GIL; what the locked path below would answer at this moment)
        cached = self._cached.get(job_type)
        if cached is not None and time.monotonic() - cached[1] < REFRESH_S:
            bounded = self._bounded.get((job_type, timeout_s))
            if bounded is not None and bounded[0] is cached[0]:
                return bounded[1]
        with self._lock:
            found = self._unbounded(job_type)
            # asked before every start: the bounded estimate is kept beside the unbounded one it was made from
            bounded = self._bounded.get((job_type, timeout_s))
            if bounded is not None and bounded[0] is found:
                return bounded[1]
        if not found.measured:
            result = runtime.estimate((), timeout_s, self.budget_s)
        else:
            result = Estimate(high_s=min(timeout_s, found.high_s), mean_s=found.mean_s, measured=True)
        with self._lock:
            self._bounded[(job_type, timeout_s)] = (found, result)
        return result

    def known_types(self) -> list[str]:
        with self._lock:
            return list(self._samples)

    def mean(self, job_type: str) -> Optional[float]:
        cached = self._cached.get(job_type)  # fresh: without the lock, as estimate()
        if cached is not None and time.monotonic() - cached[1] < REFRESH_S:
            return cached[0].mean_s
        with self._lock:
            return self._unbounded(job_type).mean_s

    def observe(self, job_type: str, seconds: float) -> None:
        """A successful run of `job_type` took `seconds`."""
        self.observe_many(job_type, (seconds,))

    def observe_many(self, job_type: str, runs: Sequence[float]) -> None:
        """Successful runs of `job_type` took these seconds: observe() for each, under one acquisition."""
        if not runs:
            return
        with self._lock:
            kept = self._samples.setdefault(job_type, [])
            kept.extend(runs)
            if len(kept) > runtime.SAMPLES_KEPT:
                del kept[:len(kept) - runtime.SAMPLES_KEPT]
            self._unsaved[job_type].extend(runs)
            self._runs[job_type] += len(runs)
            cached = self._cached.get(job_type)
            # a run longer than the percentile the estimate held, or the run that makes the type measured: at once
            if cached is not None and _outgrows(cached[0], max(runs)):
                del self._cached[job_type]

    def changes_estimate(self, job_type: str, seconds: float) -> bool:
        """Whether observing a run this long now could change what estimate() answers (a run longer than the
        percentile the cached estimate holds, a type not measured yet, nothing cached): such a run is observed at
        once; another may wait for the end of its thread's run of jobs (observe_many). Read without the lock."""
        cached = self._cached.get(job_type)
        return cached is None or _outgrows(cached[0], seconds)

    def save(self, *, final: bool = False) -> None:
        """Append a sample of the runs observed since the last save to the shared rows, at most every SAVE_EVERY_S
        unless `final` (the call ends). Best effort."""
        with self._lock:
            now = time.monotonic()
            if not final and now - self._saved_at < SAVE_EVERY_S:
                return
            self._saved_at = now
            unsaved = {t: runtime.sample_run_times(v) for t, v in self._unsaved.items() if v}
            runs = dict(self._runs)
            self._unsaved.clear()
            self._runs.clear()
        if not unsaved:
            return
        try:
            append(self.engine, unsaved, runs)
        except Exception:  # estimates are an optimisation; the outcomes are already written
            log.exception("could not save run-time samples of %s", sorted(unsaved))


def _outgrows(estimate, seconds: float) -> bool:
    """Whether a run this long changes what a cached estimate says: the type is not measured yet, or the run is
    longer than the percentile the estimate holds."""
    return not estimate.measured or seconds > (estimate.high_s - runtime.MARGIN_S) / runtime.MARGIN
