"""The enqueue transaction of jobs with workflow fields (dependencies, a batch callback, singleton and debounce keys).

Two statements in the common case, whatever the number of jobs:
  1. PREPARE: lock the existing parents (named by id, and the jobs of the batches waited for), in id order, FOR NO
     KEY UPDATE, and mark those that have not ended as having dependents -- a parent's end now waits for this
     transaction, and its trigger will see the edges written here (sql/013_jobs_workflows_v1.sql) -- and take ids
     for the new jobs from the jobs sequence, so every edge and count is known before the INSERT;
  2. INSERT every job -- `waiting` with waits_for = its number of parents, else `pending` -- and the edges of the
     children inserted. ON CONFLICT DO NOTHING covers idempotency keys and singleton keys (jobs_singleton_key_idx):
     a job not inserted maps to the existing one; a debounced one replaces the waiting job's payload and moves its
     run_at instead (a running job with the key gives it up, and the new one is inserted);
then, only when needed: the edges to jobs an idempotent repeat stood for, a batch callback's registration, and the
settle -- parents that had already ended are resolved at once by jobs_workflow_resolve(), the same function the
triggers call when a parent ends (a child of completed parents is pending before this commits; of a failed one,
cancelled). A deadlock (a rare order of enqueues and finishes around one job) or serialisation failure is retried
by with_retry() with the whole transaction.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ..job import FINISHED_STATUSES, InvalidJob
from ..pgarray import array_literal
from .plan import MAX_BATCH_PARENTS, Plan, links_of

LIVE = ("waiting", "pending", "running")  # the statuses jobs_singleton_key_idx covers
RETRIED_CODES = ("40P01", "40001")  # deadlock detected, serialization failure
MAX_KEY_ROUNDS = 8  # rounds of insert / look up for singleton keys changing hands under concurrent enqueues
T = TypeVar("T")


@dataclass
class Written:
    """What an enqueue did: (id, created) per job in request order; the positions a debounced job absorbed; the
    batch callback's (id, created)."""

    jobs: list[tuple[int, bool]]
    debounced: frozenset[int] = frozenset()
    on_complete: Optional[tuple[int, bool]] = None


def with_retry(engine: Engine, work: Callable[[Connection], T], attempts: int = 3) -> T:
    """Run `work` in a transaction of its own, again after a deadlock or a serialisation failure."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except DBAPIError as exc:
            if attempt == attempts or getattr(exc.orig, "pgcode", None) not in RETRIED_CODES:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


# 1 and 2. The existing parents, locked in id order (what they are now: after the locks, their latest state), those
# that have not ended marked as having dependents; and ids for the new jobs. One statement, one row.
PREPARE = """
WITH locked AS (
    SELECT id, status, batch_id, has_dependents FROM jobs
    WHERE id = ANY(CAST(:ids AS bigint[])) OR batch_id = ANY(CAST(:batches AS text[]))
    ORDER BY id
    LIMIT :cap
    FOR NO KEY UPDATE
), marked AS (
    UPDATE jobs SET has_dependents = true
    FROM locked
    WHERE jobs.id = locked.id AND NOT locked.has_dependents
      AND locked.status NOT IN ('completed', 'failed', 'cancelled')
)
SELECT (SELECT coalesce(json_agg(json_build_array(l.id, l.status, l.batch_id) ORDER BY l.id), '[]') FROM locked l)
           AS parents,
       ARRAY(SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n)) AS new_ids
"""

NEW_IDS = "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n))"

# 3 and 4. Every job of the request in one INSERT, with the ids taken above, and the edges of the children inserted
# (those whose parent in the request was not inserted -- an idempotent repeat -- are written afterwards, to the job
# it stands for). Rows with keys go in key order: two requests with the same keys wait for each other's rows (ON
# CONFLICT waits for an insert in flight) in one order, and cannot deadlock, whatever order each lists them in.
INSERT = """
WITH inserted AS (
    INSERT INTO jobs (id, type, payload, priority, store_id, user_id, run_at, max_attempts, idempotency_key,
                      batch_id, status, waits_for, on_parent_failure, has_dependents, singleton_key)
    SELECT r.id, r.type, r.payload, r.priority, r.store_id, r.user_id,
           CASE WHEN r.debounce_s IS NOT NULL THEN now() + make_interval(secs => r.debounce_s)
                ELSE coalesce(r.run_at, now()) END,
           r.max_attempts, r.idempotency_key, r.batch_id,
           CASE WHEN r.waits_for > 0 THEN 'waiting' ELSE 'pending' END,
           r.waits_for, r.on_parent_failure, r.has_dependents, r.singleton_key
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS r(id bigint, type text, payload jsonb, priority smallint, store_id text, user_id text,
              run_at timestamptz, max_attempts int, idempotency_key text, batch_id text, waits_for int,
              on_parent_failure text, has_dependents boolean, singleton_key text, debounce_s float8)
    ORDER BY r.singleton_key, r.idempotency_key, r.id
    ON CONFLICT DO NOTHING
    RETURNING id
), edges AS (
    INSERT INTO job_dependencies (parent_id, child_id)
    SELECT e.parent_id, e.child_id
    FROM unnest(CAST(:parents AS bigint[]), CAST(:children AS bigint[])) AS e(parent_id, child_id)
    WHERE e.child_id IN (SELECT id FROM inserted)
      AND (e.parent_id <> ALL(CAST(:new_ids AS bigint[])) OR e.parent_id IN (SELECT id FROM inserted))
    ORDER BY e.parent_id, e.child_id
    ON CONFLICT DO NOTHING
)
SELECT id FROM inserted
"""

BY_IDEMPOTENCY_KEY = "SELECT idempotency_key, id FROM jobs WHERE idempotency_key = ANY(CAST(:keys AS text[]))"

BY_SINGLETON_KEY = f"""
SELECT singleton_key, id, type, status FROM jobs
WHERE singleton_key = ANY(CAST(:keys AS text[])) AND status IN {LIVE}
"""

# A debounce: the job not started yet takes the new payload and its run_at moves (later, as a rule: the directory of
# store queues needs nothing then; earlier, its trigger covers the job as for any move).
DEBOUNCE = """
UPDATE jobs SET payload = CAST(:payload AS jsonb), run_at = now() + make_interval(secs => :debounce_s)
WHERE id = :id AND status IN ('waiting', 'pending')
RETURNING id
"""

DEBOUNCE_BY_KEY = """
UPDATE jobs j SET payload = r.payload, run_at = now() + make_interval(secs => r.debounce_s)
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(key text, type text, payload jsonb, debounce_s float8)
WHERE j.singleton_key = r.key AND j.type = r.type AND j.status IN ('waiting', 'pending')
RETURNING j.singleton_key, j.id
"""

# A running job gives up its debounce key: the burst that arrived while it ran becomes a new job.
HAND_OVER_KEY = "UPDATE jobs SET singleton_key = NULL WHERE id = :id AND status = 'running' AND singleton_key = :key"

INSERT_EDGES = """
INSERT INTO job_dependencies (parent_id, child_id)
SELECT e.parent_id, e.child_id
FROM unnest(CAST(:parents AS bigint[]), CAST(:children AS bigint[])) AS e(parent_id, child_id)
ORDER BY e.parent_id, e.child_id
ON CONFLICT DO NOTHING
"""

FIX_WAITS_FOR = """
UPDATE jobs SET waits_for = w.n
FROM unnest(CAST(:ids AS bigint[]), CAST(:counts AS int[])) AS w(id, n)
WHERE jobs.id = w.id
"""

REGISTER_CALLBACK = """
INSERT INTO job_batch_callbacks (batch_id, job_id) VALUES (:batch_id, :job_id)
ON CONFLICT (batch_id) DO NOTHING
RETURNING job_id
"""

CALLBACK_OF = "SELECT job_id FROM job_batch_callbacks WHERE batch_id = :batch_id"

SETTLE = "SELECT jobs_workflow_resolve(CAST(:ids AS bigint[]))"


@dataclass
class _Parents:
    """Existing parents, locked: their status, and per waited batch its jobs."""

    status: dict[int, str] = field(default_factory=dict)
    batch_jobs: dict[str, list[int]] = field(default_factory=dict)


def enqueue(conn: Connection, rows: Sequence[dict], plan: Plan, callback: Optional[dict] = None) -> Written:
    all_rows = list(rows) + ([callback] if callback is not None else [])
    parents, new_ids = _prepare(conn, rows, plan, len(all_rows))
    planned = [_parent_ids(i, all_rows, plan, parents, new_ids) for i in range(len(all_rows))]
    ids, created, debounced = _insert(conn, all_rows, plan, new_ids, planned)

    # a child whose parent in the request was not inserted waits for the existing job that row stands for
    late_parents, late_edges, counts_fix = set(), [], []
    for i in range(len(all_rows)):
        if not created[i] or not any(not created[p] for p in plan.positions[i]):
            continue
        actual = set(planned[i]) - {new_ids[p] for p in plan.positions[i]} | {ids[p] for p in plan.positions[i]}
        for p in plan.positions[i]:
            if not created[p]:
                late_parents.add(ids[p])
                late_edges.append((ids[p], ids[i]))
        if len(actual) != len(planned[i]):  # two references that turned out to be one job
            counts_fix.append((ids[i], len(actual)))
    late_parents -= set(parents.status)
    if late_parents:
        parents.status.update({job_id: status for job_id, (status, _) in
                               _lock(conn, sorted(late_parents))["parents"].items()})
    if late_edges:
        conn.execute(text(INSERT_EDGES), {"parents": array_literal([p for p, _ in late_edges]),
                                          "children": array_literal([c for _, c in late_edges])})
    if counts_fix:
        conn.execute(text(FIX_WAITS_FOR), {"ids": array_literal([c for c, _ in counts_fix]),
                                           "counts": array_literal([n for _, n in counts_fix])})
    on_complete = None
    if callback is not None:
        position = plan.callback
        on_complete = (ids[position], created[position])
        if created[position]:
            _register_callback(conn, plan.callback_batch, ids[position])
    # parents that had ended already: their edges resolve now (the children of completed ones may be pending
    # before this commits; of failed ones, cancelled)
    waited_for = {ids[p] for i in range(len(all_rows)) if created[i] for p in plan.positions[i]}
    waited_for.update(parent for i in range(len(all_rows)) if created[i] for parent in planned[i])
    ended = sorted(job_id for job_id, status in parents.status.items()
                   if status in FINISHED_STATUSES and job_id in waited_for)
    if ended:
        conn.execute(text(SETTLE), {"ids": array_literal(ended)})
    return Written([(ids[i], created[i]) for i in range(len(rows))], frozenset(debounced), on_complete)


def _lock(conn: Connection, ids: Sequence[int], batches: Sequence[str] = (), n_new: int = 0) -> dict:
    """Lock these jobs (and the batches' jobs) in id order, mark those that have not ended as having dependents;
    returns {id: (status, batch_id)} as they are now (and, with n_new, also takes that many new ids: "new_ids")."""
    row = conn.execute(text(PREPARE), {"ids": array_literal(list(ids)), "batches": array_literal(list(batches)),
                                       "cap": MAX_BATCH_PARENTS + 1, "n": n_new}).one()
    if len(row.parents) > MAX_BATCH_PARENTS:
        raise InvalidJob("depends_on", f"the request waits for more than {MAX_BATCH_PARENTS} existing jobs",
                         status=422, code="too_many_parents")
    return {"parents": {job_id: (status, batch_id) for job_id, status, batch_id in row.parents},
            "new_ids": list(row.new_ids)}


def _prepare(conn: Connection, rows: Sequence[dict], plan: Plan, n_new: int) -> tuple[_Parents, list[int]]:
    """Lock and mark the existing parents, check they exist, take the new ids."""
    parents = _Parents()
    if not plan.parent_ids and not plan.batches:  # nothing to lock (only keys, or parents within the request)
        return parents, list(conn.execute(text(NEW_IDS), {"n": n_new}).scalar())
    locked = _lock(conn, sorted(plan.parent_ids), sorted(plan.batches), n_new)
    for job_id, (status, batch_id) in locked["parents"].items():
        parents.status[job_id] = status
        if batch_id in plan.batches:
            parents.batch_jobs.setdefault(batch_id, []).append(job_id)
    for i, row in enumerate(rows):
        links = links_of(row)
        missing = [job_id for job_id in links.parent_ids if job_id not in parents.status]
        if missing:
            raise InvalidJob(f"jobs[{i}].depends_on", f"jobs[{i}]: depends_on names job {missing[0]}, which does not "
                                                      "exist", status=422, index=i, code="unknown_parent")
        if (links.batch is not None and not parents.batch_jobs.get(links.batch)
                and not any(rows[p].get("batch_id") == links.batch for p in plan.positions[i])):
            raise InvalidJob(f"jobs[{i}].depends_on_batch", f"jobs[{i}]: batch {links.batch!r} has no jobs to wait "
                                                            "for", status=422, index=i, code="unknown_batch")
    return parents, locked["new_ids"]


def _parent_ids(i: int, all_rows: Sequence[dict], plan: Plan, parents: _Parents, new_ids: Sequence[int]) -> list[int]:
    """Row i's parents as ids, as planned (those of the request by the ids taken for them)."""
    ids = {new_ids[p] for p in plan.positions[i]}
    ids.update(links_of(all_rows[i]).parent_ids)
    for batch, waiting_rows in plan.batches.items():
        if i in waiting_rows:
            ids.update(parents.batch_jobs.get(batch, ()))
    return sorted(ids)


def _document(all_rows: Sequence[dict], plan: Plan, new_ids: Sequence[int], planned: Sequence[list[int]],
              positions: Sequence[int]) -> str:
    out = []
    for i in positions:
        row, links = all_rows[i], links_of(all_rows[i])
        out.append({
            "id": new_ids[i], "type": row["type"], "payload": row["payload"], "priority": row["priority"],
            "store_id": row.get("store_id"), "user_id": row.get("user_id"), "run_at": row.get("run_at"),
            "max_attempts": row["max_attempts"], "idempotency_key": row.get("idempotency_key"),
            "batch_id": row.get("batch_id"), "waits_for": len(planned[i]),
            "on_parent_failure": "run" if i == plan.callback else links.on_parent_failure,
            "has_dependents": plan.has_dependents[i], "singleton_key": links.singleton_key,
            "debounce_s": links.debounce_s,
        })
    return json.dumps(out, default=str)


def _insert(conn: Connection, all_rows: Sequence[dict], plan: Plan, new_ids: Sequence[int],
            planned: Sequence[list[int]]) -> tuple[list[int], list[bool], set[int]]:
    """Insert the rows and their edges; those an idempotency or singleton key turns away map to the existing job (a
    debounced one updates it). Returns per row its id and whether it was created, and the debounced positions."""
    n = len(all_rows)
    ids: list[Optional[int]] = [None] * n
    created = [False] * n
    debounced: set[int] = set()
    todo = _debounce_first(conn, all_rows, ids, debounced)
    if not todo:
        return ids, created, debounced  # type: ignore[return-value]
    edges = [(parent_id, new_ids[i]) for i in range(n) for parent_id in planned[i]]
    edge_params = {"parents": array_literal([p for p, _ in edges]), "children": array_literal([c for _, c in edges]),
                   "new_ids": array_literal(list(new_ids))}
    for _ in range(MAX_KEY_ROUNDS):
        inserted = {row[0] for row in conn.execute(text(INSERT), {
            "rows": _document(all_rows, plan, new_ids, planned, todo), **edge_params})}
        retry = []
        turned_away = []
        for i in todo:
            if new_ids[i] in inserted:
                ids[i], created[i] = new_ids[i], True
            else:
                turned_away.append(i)
        if not turned_away:
            return ids, created, debounced  # type: ignore[return-value]
        by_idem = _lookup(conn, BY_IDEMPOTENCY_KEY, [all_rows[i].get("idempotency_key") for i in turned_away])
        keys = [links_of(all_rows[i]).singleton_key for i in turned_away]
        by_key = {row.singleton_key: row for row in conn.execute(text(BY_SINGLETON_KEY), {
            "keys": array_literal(sorted({k for k in keys if k is not None}))})}
        for i in turned_away:
            row, links = all_rows[i], links_of(all_rows[i])
            idem = row.get("idempotency_key")
            if idem is not None and idem in by_idem:
                ids[i] = by_idem[idem]
                continue
            holder = by_key.get(links.singleton_key)
            if holder is None:  # the key's job ended meanwhile (or the conflicting insert rolled back): again
                retry.append(i)
                continue
            if holder.type != row["type"]:
                raise InvalidJob(f"jobs[{i}].singleton_key", f"singleton_key {links.singleton_key!r} belongs to job "
                                                             f"{holder.id}, of type {holder.type!r}", status=409,
                                 index=i, code="singleton_conflict")
            if links.debounce_s is None:
                ids[i] = holder.id
                continue
            if holder.status == "running":
                conn.execute(text(HAND_OVER_KEY), {"id": holder.id, "key": links.singleton_key})
                retry.append(i)
                continue
            if conn.execute(text(DEBOUNCE), {"id": holder.id, "payload": json.dumps(row["payload"]),
                                             "debounce_s": links.debounce_s}).first() is None:
                retry.append(i)  # claimed meanwhile: it is running now
                continue
            ids[i] = holder.id
            debounced.add(i)
        if not retry:
            return ids, created, debounced  # type: ignore[return-value]
        todo = retry
    raise RuntimeError("singleton keys kept changing hands under concurrent enqueues; try again")


def _debounce_first(conn: Connection, all_rows: Sequence[dict], ids: list, debounced: set[int]) -> list[int]:
    """A burst's usual case first: the key's job is waiting to run, and takes the newest payload and run_at (one
    UPDATE for every debounced key of the request; the last row of a key wins). Returns the rows still to insert."""
    last: dict[str, int] = {}
    for i, row in enumerate(all_rows):
        links = links_of(row)
        if links.debounce_s is not None and row.get("idempotency_key") is None:
            last[links.singleton_key] = i
    if not last:
        return list(range(len(all_rows)))
    document = json.dumps([{"key": key, "type": all_rows[i]["type"], "payload": all_rows[i]["payload"],
                            "debounce_s": links_of(all_rows[i]).debounce_s} for key, i in last.items()])
    holders = dict(conn.execute(text(DEBOUNCE_BY_KEY), {"rows": document}).all())
    todo = []
    for i, row in enumerate(all_rows):
        key = links_of(row).singleton_key
        if key in holders and key in last:
            ids[i] = holders[key]
            debounced.add(i)
        else:
            todo.append(i)
    return todo


def _lookup(conn: Connection, statement: str, keys: Sequence[Optional[str]]) -> dict[str, int]:
    wanted = sorted({k for k in keys if k is not None})
    if not wanted:
        return {}
    return {key: job_id for key, job_id in conn.execute(text(statement), {"keys": array_literal(wanted)})}


def _register_callback(conn: Connection, batch_id: str, job_id: int) -> None:
    if conn.execute(text(REGISTER_CALLBACK), {"batch_id": batch_id, "job_id": job_id}).first() is None:
        existing = conn.execute(text(CALLBACK_OF), {"batch_id": batch_id}).scalar()
        raise InvalidJob("on_complete", f"batch {batch_id!r} already has an on_complete job ({existing})",
                         status=409, code="batch_has_callback")
