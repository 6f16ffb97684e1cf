"""The owner of the jobs table's SQL: claim, start, lease renewal, finish, enqueue, the API's reads, retry and
cancel, rescue and cleanup batches. Each statement is named and says why it is shaped as it is. Two modules write
jobs for work of their own (bulk/actions.py: set-based changes over a filter; workflows/write.py: waiting jobs and
their release); every other table has one owner module (docs/ARCHITECTURE.md, "Who owns which table").

All values travel as bound parameters. Statements that take many jobs take them as arrays (or one JSON document)
so a batch costs one round trip, whatever its size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple, Optional, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from . import claimed
from .pgarray import array_literal

JOB_COLUMNS = (
    "id", "type", "payload", "status", "priority", "store_id", "user_id", "run_at", "created_at", "started_at",
    "completed_at", "attempts", "max_attempts", "last_error", "result", "locked_by", "locked_until",
    "idempotency_key", "batch_id", "deferrals", "deferred_since", "waits_for", "on_parent_failure", "singleton_key",
)
_SELECT_JOB = ", ".join(f"jobs.{c}" for c in JOB_COLUMNS)
DETAIL_COLUMNS = ("last_traceback",)  # what GET /jobs/<id> adds to JOB_COLUMNS
# What a claim returns: what the pipeline needs to run a job, no more (decoding the other columns of 1000 claimed
# rows cost a third of the claim's client time in the benchmark's profile).
CLAIMED_COLUMNS = ("id", "type", "payload", "priority", "store_id", "user_id", "run_at", "attempts", "max_attempts",
                   "batch_id", "deferrals", "deferred_since")
_RETURNING_CLAIMED = ", ".join(f"jobs.{c}" for c in CLAIMED_COLUMNS)

# --- claim -------------------------------------------------------------------------------------------------------

# Expired leases: a process that died (its calls renew the leases of the jobs they hold while their handlers'
# threads live, jobprocessor/leases.py), or a handler stuck past JOBS_STUCK_HANDLER_S. A job whose handler had
# started (started_at set: its attempt is spent) goes back to pending, or to failed when that was its last attempt;
# one that was only leased (claimed ahead of a free thread, never started) goes back to pending as it was. Bounded
# (LIMIT) and SKIP LOCKED so concurrent callers split the work.
_RESCUE_CTE = """
expired AS (
    SELECT id FROM jobs
    WHERE status = 'running' AND locked_until < now()
    ORDER BY locked_until
    LIMIT :rescue_limit
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE jobs
    SET status = CASE WHEN jobs.started_at IS NOT NULL AND jobs.attempts >= jobs.max_attempts
                      THEN 'failed' ELSE 'pending' END,
        completed_at = CASE WHEN jobs.started_at IS NOT NULL AND jobs.attempts >= jobs.max_attempts THEN now() END,
        last_error = CASE WHEN jobs.started_at IS NULL THEN jobs.last_error
                          ELSE 'lease expired: ' || coalesce(jobs.locked_by, '?')
                               || ' did not finish within its lease (its process stopped renewing it)' END,
        started_at = CASE WHEN jobs.started_at IS NOT NULL AND jobs.attempts >= jobs.max_attempts
                          THEN jobs.started_at END,
        locked_by = NULL,
        locked_until = NULL
    FROM expired
    WHERE jobs.id = expired.id
    RETURNING jobs.id, jobs.status
)"""

# The claim's `due` step: jobs_fair_claim() (sql/026_fair_claim_v3.sql), fair across stores. Priority is global;
# within a priority level the slots are shared max-min fairly (water-filling, in rounds) among the stores with due
# jobs, and when there are more stores than slots the stores that have waited longest go first (so over successive
# calls every store is served in turn); within a store: priority, run_at, id. job_types restricts the claim to jobs
# of those types (None: every type) -- a process passes the types it has handlers for. max_per_store
# (JOBS_MAX_PER_STORE) caps one store's jobs per call. jobprocessor/policies/fairness.py is the same rule in Python
# (the tests compare the two). The shape, and its cost, are explained beside the function; in short: the stores
# whose turn it is come from the directory job_store_queues (sql/025, kept by triggers on jobs, which also knows
# each store's types), read in wait order and stopped after about as many stores as there are slots, one index
# probe each for its head; then per-store reads of only as many jobs as the store can be given, each `ORDER BY
# run_at, id LIMIT n FOR UPDATE SKIP LOCKED`, so concurrent callers skip each other's rows and the recheck of
# status = 'pending' keeps a row claimed meanwhile out. It returns the ids locked, with their place in the claim
# order (priority, round, rank). LIMIT tells the planner how few rows come back (the UPDATE then joins by primary
# key). The jobs this statement rescues are passed in to be left alone: the function would see them pending, and
# this statement's UPDATE cannot change a row twice; the next call can claim them.
_FAIR_DUE_CTE = """
due AS (
    SELECT f.job_id AS id, f.claim_order
    FROM jobs_fair_claim(CAST(:limit AS integer), CAST(:job_types AS text[]), CAST(:max_per_store AS integer),
                         ARRAY(SELECT id FROM rescued)) AS f
    LIMIT :limit
)"""

# The claim itself: the jobs are leased to this call (status running, locked_by its token, locked_until) in the
# statement that locks them, so a job is never "claimed but not leased" as far as the table can tell. No attempt is
# spent here: START marks a job's run when a thread is about to run it (a killed call costs an attempt only to the
# jobs whose handlers had started; the rest come back as they were when their lease ends). The rescue runs in the
# same statement (one round trip and, with nothing due, one cheap indexed statement per call); its counts come back
# beside the claimed rows (a LEFT JOIN, so there is always one row to read them from). A call's first claim also
# records the call in job_ticks (final at once when it claims nothing, so a call with nothing due stays one
# statement); later rounds leave that out.
#
# The exception: jobs of the types in :start_types (the processor names the types measured to take only a few
# milliseconds) are started by the claim itself, attempt spent, because one start statement per handful of
# microsecond jobs would cap a call at a few thousand jobs a second. Such a round is what its threads get through in
# half a second, so a call killed mid-round costs at most that much quick work an attempt each.
_CLAIMED_CTE = f"""
claimed AS (
    UPDATE jobs
    SET status = 'running',
        attempts = jobs.attempts + CASE WHEN jobs.type = ANY (CAST(:start_types AS text[])) THEN 1 ELSE 0 END,
        started_at = CASE WHEN jobs.type = ANY (CAST(:start_types AS text[])) THEN now() END,
        locked_by = :worker,
        locked_until = now() + make_interval(secs => :lease_s)
    FROM due
    -- (the ANY reads the rows by primary key: joined on due.id alone, a table of some 10,000s of rows was read
    -- whole and hashed in every claim of 1,000: a fifth of its time in bench/drain_fifo.py)
    WHERE jobs.id = due.id AND jobs.id = ANY (ARRAY(SELECT d.id FROM due AS d))
    RETURNING {_RETURNING_CLAIMED}, due.claim_order, jobs.started_at IS NOT NULL AS started
)"""

_TICK_CTE = """
tick AS (
    INSERT INTO job_ticks (worker, job_limit, budget_s, job_type, rounds, claimed, rescued, ended_at)
    SELECT :worker, :tick_limit, :tick_budget_s, CAST(:tick_job_type AS text),
           CASE WHEN EXISTS (SELECT 1 FROM claimed) THEN 1 ELSE 0 END,
           (SELECT count(*) FROM claimed), (SELECT count(*) FROM rescued),
           CASE WHEN NOT EXISTS (SELECT 1 FROM claimed) THEN now() END
    RETURNING id
)"""


def _claim_select(tick_id: str) -> str:
    return f"""
SELECT claimed.*,
       r.rescued_pending, r.rescued_failed, {tick_id} AS tick_id,
       -- whether a recurring job is due (job_schedules_due_idx): asked here so that a call with nothing to do
       -- stays one statement; the processor enqueues due schedules only when this says so
       EXISTS (SELECT 1 FROM job_schedules WHERE enabled AND next_run_at <= now()) AS schedules_due
FROM (SELECT count(*) FILTER (WHERE status = 'pending') AS rescued_pending,
             count(*) FILTER (WHERE status = 'failed') AS rescued_failed
      FROM rescued) AS r
LEFT JOIN claimed ON true
"""


_CLAIM_TAIL = _CLAIMED_CTE + _claim_select("CAST(NULL AS bigint)")
_CLAIM_TAIL_WITH_TICK = _CLAIMED_CTE + "," + _TICK_CTE + _claim_select("(SELECT id FROM tick)")

CLAIM = "WITH " + _RESCUE_CTE + "," + _FAIR_DUE_CTE + "," + _CLAIM_TAIL


def claim_around(due_cte: str) -> str:
    """The claim statement with another selection as its `due` step (a CTE named due with id and claim_order):
    the rescue, the lease and the counts as the real claim has them (bench/fifo_claim.py's baseline)."""
    return "WITH " + _RESCUE_CTE + "," + due_cte + "," + _CLAIM_TAIL


def run_claim(conn: Connection, statement: str, *, limit: int, worker: str, lease_s: float,
              job_types: Optional[Sequence[str]] = None, rescue_limit: int = 1000,
              start_types: Sequence[str] = ()) -> "ClaimResult":
    """Run a statement built by claim_around() with claim()'s parameters (no store cap)."""
    return _claim(conn, statement, limit=limit, worker=worker, lease_s=lease_s, job_types=_types_param(job_types),
                  rescue_limit=rescue_limit, max_per_store=None, start_types=array_literal(sorted(set(start_types))))
CLAIM_FIRST = "WITH " + _RESCUE_CTE + "," + _FAIR_DUE_CTE + "," + _CLAIM_TAIL_WITH_TICK


@dataclass(frozen=True)
class TickStart:
    """What a call's first claim records about the call in job_ticks."""

    limit: int
    budget_s: float
    job_type: Optional[str] = None


@dataclass(frozen=True)
class ClaimResult:
    jobs: list  # rows with CLAIMED_COLUMNS (and claim_order), in claim order: priority, round-robin round, store rank
    rescued_pending: int
    rescued_failed: int
    schedules_due: bool = False  # a recurring job's slot has come (see schedules.enqueue_due)
    tick_id: Optional[int] = None  # the job_ticks row the first claim of a call inserted

    @property
    def rescued(self) -> int:
        return self.rescued_pending + self.rescued_failed


def claim(conn: Connection, *, limit: int, worker: str, lease_s: float,
          job_types: Optional[Sequence[str]] = None, rescue_limit: int = 1000,
          max_per_store: Optional[int] = None, tick: Optional[TickStart] = None,
          start_types: Sequence[str] = ()) -> ClaimResult:
    """Rescue expired leases and lease up to `limit` due jobs fairly across stores to `worker`, in one statement;
    with `job_types`, only jobs of those types (an empty list claims nothing); jobs of `start_types` are started
    (attempt spent) by the claim itself (row["started"]); with `tick`, also record the call in job_ticks (a call's
    first claim)."""
    params = dict(limit=limit, worker=worker, lease_s=lease_s, job_types=_types_param(job_types),
                  rescue_limit=rescue_limit, max_per_store=max_per_store,
                  start_types=array_literal(sorted(set(start_types))))
    if tick is None:
        return _claim(conn, CLAIM, **params)
    return _claim(conn, CLAIM_FIRST, **params, tick_limit=tick.limit, tick_budget_s=tick.budget_s,
                  tick_job_type=tick.job_type)


def _types_param(job_types: Optional[Sequence[str]]) -> Optional[str]:
    if isinstance(job_types, str):
        raise TypeError("job_types is a sequence of type names, not one string")
    return None if job_types is None else array_literal(sorted(set(job_types)))


def _claim(conn: Connection, statement: str, **params: Any) -> ClaimResult:
    # rows read off the cursor as tuples, payloads as JSON text decoded when read (jobprocessor/claimed.py)
    with claimed.jsonb_as_text(conn.connection.dbapi_connection):
        result = conn.execute(text(statement), params)
    rows = claimed.rows(result.cursor)
    result.close()
    first = rows[0]
    jobs = [row for row in rows if row.id is not None]
    # the order jobs start in: the claim order (FIFO: priority, run_at, id), so a budget that runs out releases
    # the last rounds, not some store's whole share; when every claim_order differs it alone decides
    orders = {row.claim_order for row in jobs}
    if len(orders) == len(jobs) and None not in orders:
        jobs.sort(key=attrgetter("claim_order"))
    else:
        jobs.sort(key=lambda row: (row.claim_order or 0, row.priority, row.run_at, row.id))
    return ClaimResult(jobs, int(first.rescued_pending), int(first.rescued_failed), bool(first.schedules_due),
                       first.tick_id)


# The rescue step alone (maintenance.rescuer.Rescuer.run_once, `flask jobs rescue`): the claim runs the same CTE
# in every round; this is for an operator who wants expired leases back now, with nothing claimed.
RESCUE = "WITH " + _RESCUE_CTE + """
SELECT count(*) FILTER (WHERE status = 'pending') AS rescued_pending,
       count(*) FILTER (WHERE status = 'failed') AS rescued_failed
FROM rescued"""


def rescue(conn: Connection, *, limit: int) -> tuple[int, int]:
    """Rescue up to `limit` expired leases; returns (back to pending, failed)."""
    row = conn.execute(text(RESCUE), {"rescue_limit": limit}).one()
    return int(row.rescued_pending), int(row.rescued_failed)


# One batch of cleanup_old_jobs() (sql/051_jobs_archive_cleanup_v1.sql): completed jobs older than :completed
# move to jobs_archive, failed and cancelled ones older than :failed are deleted, at most :batch_size rows; `done`
# when nothing old is left. The statement_timeout is set with set_config(..., true) (SET LOCAL: it ends with the
# transaction, and the value is a bound parameter), so one batch can never hold its locks for long.
CLEANUP_TIMEOUT = "SELECT set_config('statement_timeout', :ms, true)"
CLEANUP_BATCH = """
SELECT archived, deleted, done
FROM cleanup_old_jobs(CAST(:completed AS interval), CAST(:failed AS interval), CAST(:batch_size AS integer), 1)
"""


def cleanup_batch(conn: Connection, *, completed_older_than, failed_older_than, batch_size: int,
                  statement_timeout_s: float) -> tuple[int, int, bool]:
    """One cleanup batch inside the caller's transaction; returns (archived, deleted, done)."""
    conn.execute(text(CLEANUP_TIMEOUT), {"ms": str(max(1, int(statement_timeout_s * 1000)))})
    row = conn.execute(text(CLEANUP_BATCH), {"completed": completed_older_than, "failed": failed_older_than,
                                             "batch_size": batch_size}).one()
    return int(row.archived), int(row.deleted), bool(row.done)

# When the next pending job falls due, in seconds from now (NULL: no pending job lies in the future): asked by a call
# whose queue ran dry, to keep going a little if one is about to. One probe per priority level (1..10, the CHECK's
# bounds) of jobs_claim_idx (priority, run_at, id) WHERE status = 'pending': ten index descents however large a
# backlog of scheduled jobs.
NEXT_DUE = """
SELECT extract(epoch FROM min(n.run_at) - now())
FROM generate_series(1, 10) AS p(priority)
CROSS JOIN LATERAL (SELECT j.run_at FROM jobs j
                    WHERE j.status = 'pending' AND j.priority = p.priority AND j.run_at > now()
                    ORDER BY j.run_at LIMIT 1) AS n
"""


def next_due_in_s(conn: Connection) -> Optional[float]:
    value = conn.execute(text(NEXT_DUE)).scalar()
    return None if value is None else float(value)


# --- start and keep ------------------------------------------------------------------------------------------------

# A job's run starts: its attempt is spent and started_at set, in one statement for every job starting at that
# moment, committed before any of their handlers runs (so a process killed by a handler still counts that run).
# `started_at IS NULL` makes a repeat harmless; the locked_by fence keeps a job another call has taken over out.
# No `status = 'running'` here: locked_by holds a call's token only while the job is running (every other
# transition clears it), and with that predicate the planner chose jobs_running_lease_idx, whose estimate of running
# rows is always stale, and walked every running job per start; without it each id is one primary-key probe.
START = """
UPDATE jobs SET attempts = attempts + 1, started_at = now()
WHERE id = ANY(CAST(:ids AS bigint[])) AND locked_by = :worker AND started_at IS NULL
RETURNING id
"""


def start(conn: Connection, worker: str, job_ids: Sequence[int]) -> set[int]:
    """Mark these leased jobs as running their handler now; returns the ids marked (a missing one is no longer
    this call's: do not run it)."""
    if not job_ids:
        return set()
    return {row[0] for row in conn.execute(text(START), {"ids": array_literal(list(job_ids)), "worker": worker})}


# The heartbeat: the leases of the jobs a process still holds move forward. Rows locked right now (being finished,
# or started) are skipped rather than waited for: their lease is renewed by the next beat, long before it ends. The
# rows are locked in id order, so two beats of one process never deadlock each other.
EXTEND_LEASES = """
WITH held AS (
    SELECT j.id
    FROM jobs j
    JOIN unnest(CAST(:ids AS bigint[]), CAST(:workers AS text[])) AS h(id, worker) ON j.id = h.id
    WHERE j.id = ANY (CAST(:ids AS bigint[])) AND j.status = 'running' AND j.locked_by = h.worker  -- (as FINISH)
    ORDER BY j.id
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs SET locked_until = greatest(jobs.locked_until, now() + make_interval(secs => :lease_s))
FROM held
WHERE jobs.id = held.id
RETURNING jobs.id
"""


def extend_leases(conn: Connection, held: Sequence[tuple[int, str]], lease_s: float) -> set[int]:
    """Renew the leases of (job id, lease token) pairs; returns the ids renewed."""
    if not held:
        return set()
    return {row[0] for row in conn.execute(text(EXTEND_LEASES), {
        "ids": array_literal([job_id for job_id, _ in held]),
        "workers": array_literal([worker for _, worker in held]),
        "lease_s": lease_s,
    })}


# --- finish ------------------------------------------------------------------------------------------------------

class Outcome(NamedTuple):
    """What became of one claimed job. status: completed | failed | pending (retry, or released unstarted).
    Immutable; a NamedTuple, not a frozen dataclass, because one is made per job (a frozen dataclass's __init__
    cost a microsecond job 3 us)."""

    job_id: int
    status: str
    result_json: Optional[str] = None  # already serialised (and checked) JSON
    error: Optional[str] = None
    delay_s: Optional[float] = 0.0  # pending: run again after this many seconds (None: keep run_at)
    give_back_attempt: bool = False  # RetryLater and budget cuts give the run's attempt back
    deferred: bool = False  # RetryLater or a budget cut: counted in jobs.deferrals (bounded)
    traceback: Optional[str] = None  # where `error` happened (bounded): jobs.last_traceback, replaced with last_error


# One statement for the whole batch: the outcomes arrive as parallel arrays, unnest() turns them into rows.
# `locked_by = :worker` is the fence against a stale writer: if our lease ran out and another caller rescued and
# re-claimed the job, this call no longer owns it and its late outcome is dropped (the ids it did write come back).
FINISH = """
UPDATE jobs AS j
SET status = o.status,
    result = CASE WHEN o.status = 'completed' THEN CAST(o.result AS jsonb) ELSE j.result END,
    last_error = coalesce(o.error, j.last_error),
    last_traceback = CASE WHEN o.error IS NOT NULL THEN o.traceback ELSE j.last_traceback END,
    attempts = j.attempts - o.give_back,
    deferrals = j.deferrals + o.deferred,
    deferred_since = CASE WHEN o.deferred = 1 THEN coalesce(j.deferred_since, now()) ELSE j.deferred_since END,
    -- a retry waits delay_s; a released job (delay_s NULL) keeps its run_at, and so its place in line
    run_at = CASE WHEN o.status = 'pending' AND o.delay_s IS NOT NULL
                  THEN now() + make_interval(secs => o.delay_s) ELSE j.run_at END,
    started_at = CASE WHEN o.give_back = 1 AND o.status = 'pending' THEN NULL ELSE j.started_at END,
    completed_at = CASE WHEN o.status IN ('completed', 'failed') THEN now() END,
    locked_by = NULL,
    locked_until = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:results AS text[]),
            CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:give_backs AS int[]),
            CAST(:deferred AS int[]), CAST(:tracebacks AS text[]))
     AS o(id, status, result, error, delay_s, give_back, deferred, traceback)
-- (the ANY reads the rows by primary key: joined on o.id alone, a table of some 10,000s of rows was read whole and
-- hashed for every batch)
WHERE j.id = o.id AND j.id = ANY (CAST(:ids AS bigint[])) AND j.status = 'running' AND j.locked_by = :worker
RETURNING j.id
"""


# The usual batch: every outcome a success (completed, no error, attempt kept, not deferred). FINISH then sets what
# this sets -- its other columns keep their values for such an outcome -- but evaluates each CASE and unnests eight
# arrays per row: this statement is 3.8 ms cheaper for 1,000 outcomes (of 18; docs/BENCHMARKS.md). Same fence.
FINISH_COMPLETED = """
UPDATE jobs AS j
SET status = 'completed', result = CAST(o.result AS jsonb), completed_at = now(), locked_by = NULL, locked_until = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:results AS text[])) AS o(id, result)
WHERE j.id = o.id AND j.id = ANY (CAST(:ids AS bigint[])) AND j.status = 'running' AND j.locked_by = :worker
RETURNING j.id
"""


def _column_literal(values: Sequence[Any]) -> str:
    """array_literal(values); a batch's columns mostly hold one value ("completed", "null", None, 0)."""
    first = values[0]
    if values.count(first) == len(values) and (first is None or type(first) in (str, int, float)):
        element = array_literal((first,))[1:-1]
        return "{" + ",".join([element] * len(values)) + "}"
    return array_literal(values)


def finish(conn: Connection, worker: str, outcomes: Sequence[Outcome]) -> set[int]:
    """Record a batch of outcomes; returns the ids written (a missing id had lost its lease to another caller)."""
    if not outcomes:
        return set()

    # the batch's columns at once (Outcome's field order), each column's literal made once when one value fills it
    ids, statuses, results, errors, delays, give_backs, deferred, tracebacks = zip(*outcomes)
    ids_literal = "{" + ",".join(map(str, map(int, ids))) + "}"
    n = len(outcomes)
    if (statuses.count("completed") == n and errors.count(None) == n and not any(give_backs)
            and not any(deferred)):  # every one a success
        params = {"worker": worker, "ids": ids_literal, "results": _column_literal(results)}
        return _written(conn.execute(text(FINISH_COMPLETED), params))
    params = {
        "worker": worker,
        "ids": ids_literal,
        "statuses": _column_literal(statuses),
        "results": _column_literal(results),
        "errors": _column_literal(errors),
        "delays": _column_literal([None if d is None else float(d) for d in delays]),
        "give_backs": _column_literal([1 if g else 0 for g in give_backs]),
        "deferred": _column_literal([1 if d else 0 for d in deferred]),
        "tracebacks": _column_literal(tracebacks),
    }
    return _written(conn.execute(text(FINISH), params))


def _written(result) -> set[int]:
    written = {job_id for job_id, in result.cursor.fetchall()}
    result.close()
    return written


# --- enqueue -----------------------------------------------------------------------------------------------------

# Up to 1000 jobs in one INSERT: the batch travels as one JSON array, jsonb_to_recordset() turns it into rows.
# ON CONFLICT DO NOTHING on the idempotency key makes a repeat (even a concurrent one, which waits for the first
# insert to commit) insert nothing; the existing ids are then read by key. ORDER BY ord makes the identity values
# ascend in input order, which is how the ids of rows without a key are matched back to their input position.
ENQUEUE = """
INSERT INTO jobs (type, payload, priority, store_id, user_id, run_at, max_attempts, idempotency_key, batch_id)
SELECT r.type, r.payload, r.priority, r.store_id, r.user_id, coalesce(r.run_at, now()), r.max_attempts,
       r.idempotency_key, r.batch_id
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS r(ord int, type text, payload jsonb, priority smallint, store_id text, user_id text, run_at timestamptz,
          max_attempts int, idempotency_key text, batch_id text)
ORDER BY r.ord
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, idempotency_key
"""

EXISTING_BY_KEY = "SELECT id, idempotency_key FROM jobs WHERE idempotency_key = ANY(CAST(:keys AS text[]))"


def enqueue(conn: Connection, rows: Sequence[dict]) -> list[tuple[int, bool]]:
    """Insert validated job rows (see jobprocessor.enqueue); returns (id, created) per input row, in order."""
    if not rows:
        return []
    document = json.dumps([dict(row, ord=i) for i, row in enumerate(rows)], default=str)
    inserted = conn.execute(text(ENQUEUE), {"rows": document}).all()
    by_key = {key: job_id for job_id, key in inserted if key is not None}
    unkeyed_ids = iter(sorted(job_id for job_id, key in inserted if key is None))
    wanted = [row["idempotency_key"] for row in rows if row.get("idempotency_key") is not None]
    existing = {}
    if len(by_key) < len(set(wanted)):
        existing = {key: job_id for job_id, key in conn.execute(text(EXISTING_BY_KEY), {"keys": wanted})}
    out: list[tuple[int, bool]] = []
    seen: set[str] = set()
    for row in rows:
        key = row.get("idempotency_key")
        if key is None:
            out.append((next(unkeyed_ids), True))
        elif key in by_key and key not in seen:
            out.append((by_key[key], True))
        else:
            out.append((by_key.get(key) or existing[key], False))
        if key is not None:
            seen.add(key)
    return out


# --- the job API ---------------------------------------------------------------------------------------------------

# One job, with the traceback of its last failure (the listing's pages leave it out: up to 8 KB a job)
GET_JOB = f"SELECT {_SELECT_JOB}, jobs.last_traceback FROM jobs WHERE id = :id"

# Newest first, keyset-paginated on id: `after` is the last id of the previous page, so every page is one indexed
# range scan however deep it is (no OFFSET). One row more than the page tells whether another page follows.
# psycopg2 sends the values inline, so the planner sees which filters are NULL and picks the index for the rest:
# type+status jobs_type_status_{live,finished}_idx, store_id+status jobs_store_status_{live,finished}_idx,
# user_id+store_id+status jobs_user_store_status_{live,finished}_idx (the status picks the half, see
# sql/055_ops_dashboard_indexes_v1.sql), batch_id jobs_batch_idx, status waiting jobs_waiting_idx, none: the
# primary key. Without a status filter, the third line (always true: the CHECK constraint allows no other status)
# lets the planner read both halves of a split index and the few waiting jobs (a BitmapOr) instead of scanning the
# table for a user's or a store's jobs.
#
# A page is also bounded in bytes (MAX_PAGE_BYTES): a job counts for its payload, result and error (up to
# MAX_PAYLOAD_BYTES + MAX_RESULT_BYTES each) plus 400 bytes for its other columns, and the page ends before the
# job that would start past the bound (the first job always comes). Measured here, in the statement, so rows past
# the bound never leave the server; the page's selection (the inner query) is the same indexed scan.
LIST_JOBS = f"""
SELECT * FROM (
    SELECT page.*, sum(page.row_bytes) OVER (ORDER BY page.id DESC) - page.row_bytes AS bytes_before,
           count(*) OVER () AS fetched
    FROM (
SELECT {_SELECT_JOB},
       octet_length(jobs.payload::text) + coalesce(octet_length(jobs.result::text), 0)
       + coalesce(octet_length(jobs.last_error), 0) + 400 AS row_bytes
FROM jobs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:status AS text) IS NOT NULL OR status IN ('pending', 'running')
       OR status IN ('completed', 'failed', 'cancelled') OR status = 'waiting')
  AND (CAST(:job_type AS text) IS NULL OR type = CAST(:job_type AS text))
  AND (CAST(:store_id AS text) IS NULL OR store_id = CAST(:store_id AS text))
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))
  AND (CAST(:batch_id AS text) IS NULL OR batch_id = CAST(:batch_id AS text))
  AND (CAST(:after AS bigint) IS NULL OR id < CAST(:after AS bigint))
ORDER BY id DESC
LIMIT :limit
    ) AS page
) AS sized
WHERE bytes_before < :max_bytes
ORDER BY id DESC
"""

# Manual retry gives a failed or cancelled job a fresh set of attempts (and of deferrals), due now. Its parents are
# not looked at again (their ends were counted when it was cancelled): retry a failed parent first, then the children
# its failure cancelled. A job whose singleton_key another unfinished job holds cannot come back (unique violation
# on jobs_singleton_key_idx: the API answers 409).
RETRY_JOB = f"""
UPDATE jobs SET status = 'pending', attempts = 0, run_at = now(), started_at = NULL, completed_at = NULL,
                result = NULL, locked_by = NULL, locked_until = NULL, deferrals = 0, deferred_since = NULL
WHERE id = :id AND status IN ('failed', 'cancelled')
RETURNING {_SELECT_JOB}
"""

# Only a pending or waiting job can be cancelled: a running one is in a handler's hands (its outcome will be
# recorded). Its waiting children are cancelled with it by the workflow triggers (sql/013_jobs_workflows_v1.sql).
CANCEL_JOB = f"""
UPDATE jobs SET status = 'cancelled', completed_at = now()
WHERE id = :id AND status IN ('pending', 'waiting')
RETURNING {_SELECT_JOB}
"""

# One batch's progress from jobs_batch_idx (batch_id, status): an index-only count per status.
BATCH_COUNTS = "SELECT status, count(*) AS n FROM jobs WHERE batch_id = :batch_id GROUP BY status"


def get_job(conn: Connection, job_id: int):
    return conn.execute(text(GET_JOB), {"id": job_id}).mappings().first()


DEFAULT_MAX_PAGE_BYTES = 8 * 1024 * 1024


def list_jobs(conn: Connection, *, status=None, job_type=None, store_id=None, batch_id=None, after=None,
              limit: int = 50, user_id=None, max_bytes: int = DEFAULT_MAX_PAGE_BYTES) -> tuple[list, Optional[int]]:
    """One page, newest first, and the `after` of the next page (None: this was the last). The page ends early
    when its jobs reach `max_bytes` (payloads, results, errors)."""
    rows = conn.execute(text(LIST_JOBS), {
        "status": status, "job_type": job_type, "store_id": store_id, "batch_id": batch_id, "after": after,
        "user_id": user_id,
        "limit": limit + 1, "max_bytes": max_bytes,
    }).mappings().all()
    page = rows[:limit]
    more = bool(rows) and (rows[0]["fetched"] > limit or len(rows) < rows[0]["fetched"])
    return page, (page[-1]["id"] if more and page else None)


def retry_job(conn: Connection, job_id: int):
    return conn.execute(text(RETRY_JOB), {"id": job_id}).mappings().first()


def cancel_job(conn: Connection, job_id: int):
    return conn.execute(text(CANCEL_JOB), {"id": job_id}).mappings().first()


def batch_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    return {row.status: int(row.n) for row in conn.execute(text(BATCH_COUNTS), {"batch_id": batch_id})}
