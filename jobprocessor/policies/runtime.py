"""How long a job of a type will run, when a call may start it, and how much work a call takes on at once. Pure:
no database, no clock (callers pass the times).

The rule the README states:

    estimate   = the 95th percentile (nearest rank) of the type's recent successful run times x 1.1 (+ 10 ms),
                 never more than its timeout; until MIN_SAMPLES runs are known, its timeout capped at half the
                 call's budget (so a first wave starts, and measures, even when the timeout exceeds the budget)
    start      a job while its estimate fits in what is left of the call's budget
    deadline   the earlier of its own timeout and the end of the budget; a job cut short by the budget's end (not
               by its own timeout) gets its attempt back

Recent run times are shared by every process and instance (table job_type_runtimes, jobprocessor/runtimes.py):
only the newest SAMPLES_KEPT are kept, so the estimate follows a type whose run time changes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Optional, Sequence

SAMPLES_KEPT = 64  # run times kept per type (the window the percentile is taken over)
SAMPLES_PER_FLUSH = 16  # at most this many of one batch's run times are added (a random sample of the batch)
MIN_SAMPLES = 3
QUANTILE = 0.95
MARGIN = 1.1
MARGIN_S = 0.01
LANE_HEADROOM = 1.25  # rate-limited lanes hold this many more threads than rate x latency, for latency spread


@dataclass(frozen=True)
class Estimate:
    high_s: float  # what the start rule compares with the time left
    mean_s: Optional[float]  # mean recent run time; None until measured
    measured: bool


def quantile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: the smallest sample with at least q of the samples at or below it."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def estimate(samples: Sequence[float], timeout_s: float, budget_s: float) -> Estimate:
    """The type's estimate from its recent successful run times (seconds), its timeout and the call's budget."""
    usable = [s for s in samples if s == s and s >= 0]  # NaN and negative values are not run times
    if len(usable) < MIN_SAMPLES:
        return Estimate(high_s=min(timeout_s, budget_s / 2.0), mean_s=None, measured=False)
    high = quantile(usable, QUANTILE) * MARGIN + MARGIN_S
    return Estimate(high_s=min(timeout_s, high), mean_s=sum(usable) / len(usable), measured=True)


def may_start(job_estimate: Estimate, time_left_s: float) -> bool:
    return time_left_s > 0 and job_estimate.high_s <= time_left_s


def deadline(timeout_s: float, time_left_s: float) -> tuple[float, bool]:
    """Seconds the handler gets, and whether the budget (not its own timeout) set them."""
    if time_left_s < timeout_s:
        return max(0.0, time_left_s), True
    return timeout_s, False


def rate_limited_threads(rate_per_s: float, mean_latency_s: Optional[float], cap: int, timeout_s: float) -> int:
    """Threads a rate-limited type needs to reach its rate: in flight = rate x latency (Little's law), with headroom
    for the spread of latencies. Until its latency is measured, as many as the rate would need if every call took
    its whole timeout (the lane's gate paces the starts, so threads beyond the need only wait, holding no job).
    Always within [1, cap]."""
    latency = timeout_s if mean_latency_s is None else mean_latency_s
    if not rate_per_s > 0:
        return 1
    return max(1, min(cap, math.ceil(rate_per_s * latency * LANE_HEADROOM)))


@dataclass(frozen=True)
class LaneLoad:
    """One lane of a call, as the round size sees it."""

    free: int  # threads that could take a job now (wanted threads minus those running one)
    threads: int  # threads wanted
    ready: int  # jobs claimed and not started
    mean_run_s: Optional[float]  # the lane's mean successful run time so far (None: unknown)


def prefetch(lane: LaneLoad, horizon_s: float, min_prefetch: int = 2) -> int:
    """Jobs the lane's threads get through in `horizon_s`: quick jobs come in big rounds, slow ones in small ones."""
    if lane.mean_run_s is None or lane.mean_run_s <= 0:
        return min_prefetch
    return max(min_prefetch, math.ceil(lane.threads * horizon_s / max(lane.mean_run_s, 1e-6)))


def round_size(lanes: Sequence[LaneLoad], *, horizon_s: float, left: int, max_round: int,
               min_prefetch: int = 2) -> int:
    """How many jobs the next claim round asks for: enough for the threads that are free now, plus what the threads
    will get through within `horizon_s`, minus what is already claimed and waiting. 0: no claim now. A claim does
    not choose its jobs' lanes, so what one lane has waiting counts against what the others want: the jobs claimed
    ahead of the threads stay bounded whatever the mix."""
    if left <= 0:
        return 0
    idle_soon = sum(max(0, lane.free - lane.ready) for lane in lanes)  # threads that will find nothing to take
    queued = sum(max(0, lane.ready - lane.free) for lane in lanes)  # jobs still waiting once free threads took one
    ahead = sum(prefetch(lane, horizon_s, min_prefetch) for lane in lanes)
    wanted = idle_soon + ahead - queued
    if idle_soon == 0 and wanted < max(1, ahead // 2):
        return 0  # no thread will idle and half the prefetch is still there: a claim now would bring too little
    return max(0, min(wanted, left, max_round))


def first_round_size(lanes: Sequence[LaneLoad], remembered_s: Optional[float], *, horizon_s: float, left: int,
                     max_round: int) -> int:
    """A call's first round, claimed before any estimate is read: as round_size(), the lanes' unknown mean run time
    taken as `remembered_s` -- the slowest lane mean of the process's last call, if recent (the jobs it actually
    ran, not every type it has a handler for: a registered type nobody enqueues must not keep every first round
    small). None: the free threads and the minimum prefetch."""
    if remembered_s is not None:
        lanes = [replace(lane, mean_run_s=remembered_s) if lane.mean_run_s is None else lane for lane in lanes]
    return round_size(lanes, horizon_s=horizon_s, left=left, max_round=max_round)


def sample_run_times(durations: Sequence[float], k: int = SAMPLES_PER_FLUSH,
                     rng: Optional[random.Random] = None) -> list[float]:
    """Up to k of a batch's run times, chosen uniformly, so one big batch does not push every other call's runs
    out of the shared window."""
    values = list(durations)
    if len(values) <= k:
        return values
    return (rng or random).sample(values, k)
