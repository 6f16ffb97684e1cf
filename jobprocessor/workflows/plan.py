"""What the workflow fields of one enqueue request mean, checked without a database.

A job names its parents by id (existing jobs), by position in the same request ({"index": i}, an earlier job), or
as a whole batch (depends_on_batch: the batch's jobs that exist when it is enqueued, and the jobs of the same
request listed before it). Parents always exist before their children, so no cycle can be written. A batch
callback (on_complete) is one more job, a child of every job of the request's batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

POLICIES = ("cancel", "run")
MAX_PARENTS = 1000  # depends_on entries of one job
MAX_BATCH_PARENTS = 100_000  # jobs one depends_on_batch or on_complete may wait for
MAX_DEBOUNCE_S = 7 * 86400.0


class PlanError(ValueError):
    """A request whose references cannot be honoured (enqueue turns it into InvalidJob, 422 or 400)."""

    def __init__(self, index: Optional[int], field_name: str, message: str, code: str, status: int = 422):
        super().__init__(message)
        self.index, self.field, self.message, self.code, self.status = index, field_name, message, code, status


@dataclass(frozen=True)
class Links:
    """A job's workflow fields, validated one by one."""

    parent_ids: tuple[int, ...] = ()  # existing jobs
    parent_positions: tuple[int, ...] = ()  # earlier jobs of the same request
    batch: Optional[str] = None  # depends_on_batch
    on_parent_failure: Optional[str] = None  # cancel | run, when the job has parents
    singleton_key: Optional[str] = None
    debounce_s: Optional[float] = None

    @property
    def has_parents(self) -> bool:
        return bool(self.parent_ids or self.parent_positions or self.batch)


@dataclass
class Plan:
    """Per row of the request (the callback last): its parents inside the request, whether later rows wait for it,
    and the existing jobs and batches to look up."""

    positions: list[tuple[int, ...]]  # in-request parents of each row, sorted
    has_dependents: list[bool]
    parent_ids: set[int] = field(default_factory=set)  # existing parents named by id
    batches: dict[str, list[int]] = field(default_factory=dict)  # batch -> rows that wait for its existing jobs
    callback: Optional[int] = None  # position of the on_complete row
    callback_batch: Optional[str] = None


def links_of(row: dict) -> Links:
    return row.get("links") or Links()


def build(rows: Sequence[dict], callback: Optional[dict] = None) -> Plan:
    """The plan of `rows` (validated job rows, in request order) and an optional on_complete row. Raises PlanError
    for references that point forwards, a job waiting for its own batch, a batch that gains jobs after one waits for
    it, or an on_complete whose jobs are not one batch."""
    n = len(rows)
    positions: list[tuple[int, ...]] = []
    plan = Plan(positions=positions, has_dependents=[False] * (n + (1 if callback is not None else 0)))
    batch_rows: dict[str, list[int]] = {}  # batch -> positions so far
    waited_batches: dict[str, int] = {}  # batch -> first row that waits for it
    for i, row in enumerate(rows):
        links = links_of(row)
        own = set()
        for p in links.parent_positions:
            if p >= i:
                raise PlanError(i, "depends_on", f"jobs[{i}] refers to jobs[{p}]: a job can only wait for jobs "
                                                 "listed before it in the request", "invalid_reference")
            own.add(p)
        if links.batch is not None:
            if links.batch == row.get("batch_id"):
                raise PlanError(i, "depends_on_batch", f"jobs[{i}] is in batch {links.batch!r} and cannot wait for "
                                                       "its own batch", "invalid_reference")
            own.update(batch_rows.get(links.batch, ()))
            plan.batches.setdefault(links.batch, []).append(i)
            waited_batches.setdefault(links.batch, i)
        plan.parent_ids.update(links.parent_ids)
        batch_id = row.get("batch_id")
        if batch_id is not None:
            if batch_id in waited_batches:
                raise PlanError(i, "batch_id", f"jobs[{i}] joins batch {batch_id!r} after "
                                               f"jobs[{waited_batches[batch_id]}], which waits for that batch: list "
                                               "a batch's jobs before the jobs that wait for it", "invalid_reference")
            batch_rows.setdefault(batch_id, []).append(i)
        for p in own:
            plan.has_dependents[p] = True
        positions.append(tuple(sorted(own)))
    if callback is not None:
        batches = {row.get("batch_id") for row in rows}
        if len(batches) != 1 or None in batches:
            raise PlanError(None, "on_complete", "on_complete needs every job of the request in one batch (the same "
                                                 "batch_id on each)", "invalid_combination")
        plan.callback, plan.callback_batch = n, batches.pop()
        positions.append(tuple(range(n)))
        plan.has_dependents[:n] = [True] * n
        plan.batches.setdefault(plan.callback_batch, []).append(n)
    return plan
