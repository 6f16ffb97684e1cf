"""Which due jobs one claim takes: fair across stores, priority first.

This is the executable specification of the claim's `due` step: jobs_fair_claim() (sql/026_fair_claim_v3.sql) takes
the same jobs in the same order, from the directory of store queues (sql/025_job_store_queues_v2.sql) with a few
index probes per store served, and row locks. tests/test_fair_claim.py gives both the same random queues and
compares them job for job.

- A claim may be restricted to a set of job types (`types`; None: every type): then the jobs of other types do not
  exist for it -- the rule below applies to the due jobs of those types only (a store's queue, its head and so its
  wait are its jobs of those types). The store's turn stays the store's, whatever type it was served for.

- Priority is global: a level gets slots only when every due job of the levels above it has one.
- Within a level, each store's due jobs form a queue in (run_at, id) order, and slots go out in rounds: round r
  holds the r-th job of every queue that has one. Rounds are served in order, so every store gets its max-min fair
  share (water-filling): a store that needs less leaves the rest to the others, and the call takes
  min(limit, due jobs) -- work-conserving; one store alone gets the whole limit.
- Inside a round, and so for the last, partial round, queues go in rank order: the store that has waited longest
  first. A store waits since its oldest due job became due, or since it was last served, whichever is later (its
  `Turn`); ties go to the store whose last job came earlier in the last call's claim order, then to the store
  whose oldest due job is older, then by store key (not by job id: the directory can order by a store's key
  without reading its head, so stores tied on their wait -- a batch enqueued in one statement -- are placed from
  the rows read). Serving a store restarts its wait, so with more stores than slots, successive calls serve every store in
  turn (round-robin), even when a store's jobs were all enqueued at once.
- max_per_store, when set, caps one store's jobs per call across all levels.
- Jobs without a store form one store of their own (key "").
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence

NO_STORE = ""


@dataclass(frozen=True)
class DueJob:
    id: int
    priority: int
    store: str  # NO_STORE for jobs without a store_id
    run_at: Any  # anything ordered: datetimes from the database, numbers in tests
    type: str = ""


@dataclass(frozen=True)
class Turn:
    """When a store was last served, and where its last job stood in that call's claim order (1-based)."""

    served_at: Any
    served_pos: int


def store_key(store_id: Optional[str]) -> str:
    return store_id if store_id is not None else NO_STORE


def _rank_key(head: DueJob, turn: Optional[Turn]) -> tuple:
    if turn is None:
        return (head.run_at, 0, head.run_at, head.store)
    return (max(head.run_at, turn.served_at), turn.served_pos, head.run_at, head.store)


def allocate(due: Iterable[DueJob], limit: int, *, max_per_store: Optional[int] = None,
             turns: Optional[Mapping[str, Turn]] = None, types: Optional[Collection[str]] = None) -> list[DueJob]:
    """The jobs one claim of `limit` takes from the due jobs `due`, in claim order (priority, round, rank); with
    `types`, only jobs of those types."""
    turns = turns or {}
    wanted = None if types is None else set(types)
    levels: dict[int, dict[str, list[DueJob]]] = defaultdict(lambda: defaultdict(list))
    for job in due:
        if wanted is None or job.type in wanted:
            levels[job.priority][job.store].append(job)
    taken: Counter = Counter()
    out: list[DueJob] = []
    for priority in sorted(levels):
        queues = levels[priority]
        for jobs in queues.values():
            jobs.sort(key=lambda job: (job.run_at, job.id))
        order = sorted(queues, key=lambda store: _rank_key(queues[store][0], turns.get(store)))
        served = {store: 0 for store in order}
        while len(out) < limit:
            progressed = False
            for store in order:  # one round
                if len(out) == limit:
                    break
                if served[store] < len(queues[store]) and (max_per_store is None or taken[store] < max_per_store):
                    out.append(queues[store][served[store]])
                    served[store] += 1
                    taken[store] += 1
                    progressed = True
            if not progressed:
                break
    return out


def next_turns(claimed: Sequence[DueJob], now: Any) -> dict[str, Turn]:
    """The turns of the stores a claim served (`claimed` in claim order): served now, at their last job's place."""
    return {job.store: Turn(now, position) for position, job in enumerate(claimed, start=1)}
