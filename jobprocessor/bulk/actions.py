"""Bulk retry and cancel, in batches: each batch is one statement in a short transaction of its own that locks at
most BATCH_SIZE jobs, skipping any row another transaction holds (a claim, a finish, the cleanup), so retrying a
million failed jobs neither locks the table nor makes a claim wait; claims skip the batch's rows the same way.

The action applies to the jobs that matched when it started (ids up to the highest id then): jobs created while
it runs are left alone. It walks them newest first by id (keyset: each batch starts below the last one's lowest
id), re-checked under the lock, so a job that changed meanwhile (claimed, finished, retried by hand) is changed
only if it still matches. Each batch commits its jobs with the action log's running count (job_actions), so an
action cut short shows what it did.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from . import log as action_log
from .filter import BulkFilter, BulkRequest

logger = logging.getLogger("jobprocessor.bulk")

BATCH_SIZE = 1000
BATCH_STATEMENT_TIMEOUT = "30s"

# The SQL twin of filter.normalise_error (the Failed page's groups): first line, quoted values, long hex words and
# numbers replaced, cut to 200 characters.
GROUP_OF = r"""left(regexp_replace(regexp_replace(regexp_replace(
    split_part(btrim(coalesce({column}, ''), E' \t\r\n'), E'\n', 1),
    '''[^'']*''|"[^"]*"', '''…''', 'g'), '\m[0-9a-fA-F]{{8,}}\M', '#', 'g'), '[0-9]+', 'N', 'g'), 200)"""

# psycopg2 sends the values inline, so the planner sees which filters are NULL and picks an index for the rest
# (as queries.LIST_JOBS does): type+status, store+status, batch, or the primary key.
MATCHES = """
status = ANY(CAST(:statuses AS text[]))
AND (CAST(:job_type AS text) IS NULL OR type = CAST(:job_type AS text))
AND (CAST(:store_id AS text) IS NULL OR store_id = CAST(:store_id AS text))
AND (CAST(:batch_id AS text) IS NULL OR batch_id = CAST(:batch_id AS text))
AND (CAST(:error_like AS text) IS NULL OR last_error ILIKE CAST(:error_like AS text))
AND (CAST(:error_group AS text) IS NULL
     OR """ + GROUP_OF.format(column="last_error") + """ = CAST(:error_group AS text))
AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= CAST(:created_after AS timestamptz))
AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < CAST(:created_before AS timestamptz))
"""

HIGHEST_ID = "SELECT coalesce(max(id), 0) FROM jobs"
COUNT = f"SELECT count(*) FROM jobs WHERE {MATCHES} AND id <= CAST(:upto AS bigint)"

# What each action does to one job: the same as POST /jobs/<id>/retry and /cancel (queries.RETRY_JOB, CANCEL_JOB).
CHANGES = {
    "retry": "status = 'pending', attempts = 0, run_at = now(), started_at = NULL, completed_at = NULL, "
             "result = NULL, locked_by = NULL, locked_until = NULL, deferrals = 0, deferred_since = NULL",
    "cancel": "status = 'cancelled', completed_at = now()",
}


# A retry makes a job hold its singleton_key again (sql/014's unique index over waiting, pending and running jobs):
# a job whose key another unfinished job holds is skipped, as POST /jobs/<id>/retry refuses it (409), and of the
# batch's jobs sharing a key only the newest is retried. (An enqueue taking the key in the same instant makes the
# batch fail with a unique violation: the action stops there and says so in the log.)
GUARDS = {
    "retry": """
      AND (picked.singleton_key IS NULL
           OR (NOT EXISTS (SELECT 1 FROM jobs holder WHERE holder.singleton_key = picked.singleton_key
                           AND holder.status IN ('waiting', 'pending', 'running'))
               AND picked.id = (SELECT max(same.id) FROM picked same
                                WHERE same.singleton_key = picked.singleton_key)))""",
    "cancel": "",
}


def _batch_statement(action: str) -> str:
    return f"""
WITH picked AS (
    SELECT id, singleton_key FROM jobs
    WHERE {MATCHES} AND id <= CAST(:upto AS bigint) AND id < CAST(:before AS bigint)
    ORDER BY id DESC
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE jobs SET {CHANGES[action]}
    FROM picked WHERE jobs.id = picked.id{GUARDS[action]}
    RETURNING jobs.id
)
SELECT (SELECT count(*) FROM picked) AS picked, (SELECT count(*) FROM changed) AS changed,
       (SELECT min(id) FROM picked) AS lowest
"""


BATCH = {action: _batch_statement(action) for action in CHANGES}


@dataclass(frozen=True)
class Actor:
    """Who acts, for the action log: the channel (dashboard, api, cli) and the role within it."""

    channel: str
    role: str


@dataclass(frozen=True)
class BulkResult:
    matched: int
    changed: int = 0
    batches: int = 0
    action_id: Optional[int] = None


def count_matching(engine: Engine, bulk_filter: BulkFilter) -> int:
    """How many jobs an action on this filter would change now (the dry run)."""
    with engine.connect() as conn, conn.begin():
        conn.execute(text("SET TRANSACTION READ ONLY"))
        upto = conn.execute(text(HIGHEST_ID)).scalar_one()
        return int(conn.execute(text(COUNT), {**bulk_filter.params(), "upto": upto}).scalar_one())


def run(engine: Engine, request: BulkRequest, actor: Actor, *, batch_size: int = BATCH_SIZE,
        on_batch: Optional[Callable[[int, int], None]] = None) -> BulkResult:
    """A dry run counts; otherwise the action runs in batches and is logged. `on_batch(batches, changed)` is
    called after each committed batch."""
    if request.dry_run:
        return BulkResult(matched=count_matching(engine, request.filter))
    params = request.filter.params()
    with engine.begin() as conn:
        upto = int(conn.execute(text(HIGHEST_ID)).scalar_one())
        matched = int(conn.execute(text(COUNT), {**params, "upto": upto}).scalar_one())
        action_id = action_log.start(conn, actor, request.action, request.filter.as_dict(), matched)
    logger.info("bulk %s started: action %s, %s jobs matched", request.action, action_id, matched)
    before, changed, batches = upto + 1, 0, 0
    try:
        while matched:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL statement_timeout = '{BATCH_STATEMENT_TIMEOUT}'"))
                row = conn.execute(text(BATCH[request.action]),
                                   {**params, "upto": upto, "before": before, "batch": batch_size}).one()
                changed += int(row.changed)
                action_log.progress(conn, action_id, changed)
            batches += 1
            if on_batch is not None:
                on_batch(batches, changed)
            if row.picked < batch_size or row.lowest is None:
                break
            before = int(row.lowest)
    except Exception as exc:
        action_log.fail_quietly(engine, action_id, changed, type(exc).__name__)
        raise
    with engine.begin() as conn:
        action_log.finish(conn, action_id, changed)
    logger.info("bulk %s done: action %s, %s of %s jobs changed in %s batches", request.action, action_id, changed,
                matched, batches)
    return BulkResult(matched=matched, changed=changed, batches=batches, action_id=action_id)
