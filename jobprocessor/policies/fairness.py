"""Which due jobs one claim takes: fair across stores, priority first.

This is the executable specification of the claim's `due` step: jobs_fair_claim() (sql/034_fair_claim_v9.sql)
takes the same jobs in the same order, from the directory of store queues (sql/025_job_store_queues_v2.sql) with a
few index probes per store served, and row locks. tests/test_fair_claim.py and tests/flow/test_claim.py give both
the same random queues and compare them job for job (and turn for turn).

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
  the rows read). Serving a store restarts its wait, so with more stores than slots, successive calls serve every
  store in turn (round-robin), even when a store's jobs were all enqueued at once.
- max_per_store, when set, caps one store's jobs per call across all levels.
- Jobs without a store form one store of their own (key "").

Tenant flow control (`flow`, a Flow; sql/027_job_flow_control_v1.sql holds what it is made from):
- Paused jobs do not exist for the claim: a paused type, a paused store, a paused type of one store (and a type of
  a store whose OpenAI token quota is spent, held the same way until it refills).
- A store's allowance is how many jobs it may still be given -- its limits (jobs running at once, starts per minute)
  less what it has running and started lately -- across all levels of the claim, like max_per_store; a type of a
  store can have an allowance of its own: once the claim has taken that many jobs of the type from the store, the
  store's other jobs of that type do not exist for the rest of the claim (they are skipped, the store goes on with
  its other types). A store whose allowance is 0 is not in the claim at all; a type whose allowance is 0 at the
  start of a level does not count for the store's head (its rank) at that level.
- A store's weight w (a whole number, default 1) is how many jobs it gets in each round: round r holds the jobs
  (r-1)*w+1 .. r*w of the store. So rounds still go in order and stores in rank order within a round, a store alone
  still gets every slot, and no store that can still run is more than one round (w jobs) ahead of another.
- A store held back by its limits -- it has due jobs that may run at a level, but its allowance is 0 (so the claim
  gives it no job at all) -- is passed over. When it ranks before the last store
  the claim serves at that level, its wait restarts as if it had been served first in the claim (Turn(now, 0)): its
  jobs are already running (or its minute's starts are spent), so the stores behind it get their turns before it
  comes round again. (Why: otherwise a store at its limit keeps the longest wait, stays at the front of the wait
  order and every claim reads and counts it again; a store freed of its limit still gets a job within one turn of
  every store, as any store does.) A store held at a level the claim serves nobody at, or ranking after the last
  store served, is not reached: its turn stays. A store held only by per-type limits (every type it has due at its
  own limit) is not passed over.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence

NO_STORE = ""  # the store key of jobs without a store_id (a real store_id is never empty: CHECK constraint)


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


@dataclass(frozen=True)
class Flow:
    """What tenant flow control says for one claim. The defaults: nothing configured."""

    paused_types: frozenset = frozenset()
    paused_stores: frozenset = frozenset()
    paused_pairs: frozenset = frozenset()  # (store, type): a paused type of one store, or a spent token quota
    allowance: Mapping[str, int] = field(default_factory=dict)  # store -> jobs it may still be given (absent: any)
    type_allowance: Mapping[tuple, int] = field(default_factory=dict)  # (store, type) -> the same for one type
    weights: Mapping[str, int] = field(default_factory=dict)  # store -> jobs per round (absent: 1)

    def may_run(self, job: DueJob) -> bool:
        return (job.type not in self.paused_types and job.store not in self.paused_stores
                and (job.store, job.type) not in self.paused_pairs)

    def weight(self, store: str) -> int:
        return self.weights.get(store, 1)


NO_FLOW = Flow()


@dataclass(frozen=True)
class Allocation:
    """What one claim does: the jobs it takes, in claim order, and the stores it passes over (held by their limits,
    ranking before the last store served at a level), whose wait restarts."""

    jobs: list
    passed: frozenset = frozenset()


def allocate(due: Iterable[DueJob], limit: int, *, max_per_store: Optional[int] = None,
             turns: Optional[Mapping[str, Turn]] = None, types: Optional[Collection[str]] = None,
             flow: Flow = NO_FLOW) -> list[DueJob]:
    """The jobs one claim of `limit` takes from the due jobs `due`, in claim order (priority, round, rank, then the
    store's jobs in its round); with `types`, only jobs of those types; with `flow`, as tenant flow control says."""
    return allocate_claim(due, limit, max_per_store=max_per_store, turns=turns, types=types, flow=flow).jobs


def allocate_claim(due: Iterable[DueJob], limit: int, *, max_per_store: Optional[int] = None,
                   turns: Optional[Mapping[str, Turn]] = None, types: Optional[Collection[str]] = None,
                   flow: Flow = NO_FLOW) -> Allocation:
    """allocate(), and the stores the claim passes over."""
    turns = turns or {}
    wanted = None if types is None else set(types)
    levels: dict[int, dict[str, list[DueJob]]] = defaultdict(lambda: defaultdict(list))
    for job in due:
        if (wanted is None or job.type in wanted) and flow.may_run(job):
            levels[job.priority][job.store].append(job)
    taken: Counter = Counter()
    taken_of_type: Counter = Counter()

    def store_left(store: str) -> float:
        left = float("inf")
        if max_per_store is not None:
            left = max_per_store - taken[store]
        if store in flow.allowance:
            left = min(left, flow.allowance[store] - taken[store])
        return left

    def type_left(job: DueJob) -> float:
        key = (job.store, job.type)
        return flow.type_allowance[key] - taken_of_type[key] if key in flow.type_allowance else float("inf")

    out: list[DueJob] = []
    held_ranks: list[tuple[tuple, tuple]] = []  # (a held store's rank at a level, the last served store's rank there)
    for priority in sorted(levels):
        # at the level's start: each store's jobs of the types it may still be given, and the stores that may take
        # any; their heads give the rank order
        queues = {}
        for store, jobs in levels[priority].items():
            jobs = sorted((job for job in jobs if type_left(job) > 0), key=lambda job: (job.run_at, job.id))
            if jobs and store_left(store) > 0:
                queues[store] = jobs
        order = sorted(queues, key=lambda store: _rank_key(queues[store][0], turns.get(store)))
        next_at = {store: 0 for store in order}
        taken_here: Counter = Counter()
        held = [store for store in levels[priority] if flow.allowance.get(store, 1) <= 0]
        while len(out) < limit:
            progressed = False
            for store in order:  # one round: each store its next `weight` jobs
                jobs = queues[store]
                for _ in range(flow.weight(store)):
                    while next_at[store] < len(jobs) and type_left(jobs[next_at[store]]) <= 0:
                        next_at[store] += 1  # a type whose allowance this claim has used up
                    if len(out) == limit or store_left(store) <= 0 or next_at[store] == len(jobs):
                        break
                    job = jobs[next_at[store]]
                    out.append(job)
                    next_at[store] += 1
                    taken[store] += 1
                    taken_here[store] += 1
                    taken_of_type[(store, job.type)] += 1
                    progressed = True
                if len(out) == limit:
                    break
            if not progressed:
                break
        served_here = [store for store in order if taken_here[store]]
        if held and served_here:
            last_served = _rank_key(queues[served_here[-1]][0], turns.get(served_here[-1]))
            for store in held:
                head = min(levels[priority][store], key=lambda job: (job.run_at, job.id))
                held_ranks.append((_rank_key(head, turns.get(store)), last_served))
    passed = frozenset(rank[3] for rank, last_served in held_ranks if rank < last_served)
    return Allocation(out, passed)


def next_turns(claimed: Sequence[DueJob], now: Any, passed: Collection[str] = ()) -> dict[str, Turn]:
    """The turns of the stores a claim served (`claimed` in claim order): served now, at their last job's place; and
    of the stores it passed over: served now, before the first job."""
    turns = {store: Turn(now, 0) for store in passed}
    turns.update({job.store: Turn(now, position) for position, job in enumerate(claimed, start=1)})
    return turns
