"""What the dashboard's pages read. Each page reads in one READ ONLY transaction with a statement timeout, so a
page can never hold a lock a claim waits for nor run away; every query is bounded by the live queue, a page, or a
recent window, never by the history (docs/BENCHMARKS.md shows each plan at 1M jobs and 1,000 stores).
"""
from __future__ import annotations

import contextlib
import math
from datetime import datetime, timezone
from typing import Iterator, Optional

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from .. import counts, queries, queue_health, ticks
from ..pgarray import array_literal
from ..workflows import graph
from ..bulk.actions import GROUP_OF
from ..bulk.filter import like_escape
from ..job import JOB_STATUSES

STATEMENT_TIMEOUT = "5s"
PAGE = 50


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction (SET LOCAL: right through PgBouncer in transaction mode)."""
    with engine.connect() as conn, conn.begin():
        conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
        yield conn


def _rows(conn: Connection, sql: str, **params) -> list[dict]:
    return [dict(row) for row in conn.execute(text(sql), params).mappings()]


# --- overview ------------------------------------------------------------------------------------------------------

# The live queue by type in one statement: the types with live jobs from a skip scan of jobs_type_status_live_idx
# (one probe per type), each (type, status) counted in that index up to TYPE_COUNT_CAP (the scan stops there); a
# count at the cap is then estimated from the column statistics (estimate_by_type). The cost follows the number of
# types, not the size of the queue.
TYPE_COUNT_CAP = 2_000
DUE_COUNT_CAP = 10_000
LIVE_BY_TYPE = """
WITH RECURSIVE t AS (
    (SELECT type FROM jobs WHERE status IN ('pending', 'running') ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT j.type FROM jobs j WHERE j.status IN ('pending', 'running') AND j.type > t.type
            ORDER BY j.type LIMIT 1)
    FROM t WHERE t.type IS NOT NULL
)
SELECT t.type, s.status,
       (SELECT count(*) FROM (SELECT 1 FROM jobs j
                              -- the IN list lets the planner use the partial index for a status it cannot see
                              WHERE j.type = t.type AND j.status = s.status AND j.status IN ('pending', 'running')
                              LIMIT CAST(:cap AS integer) + 1) AS c) AS n
FROM t CROSS JOIN (VALUES ('pending'), ('running')) AS s(status)
WHERE t.type IS NOT NULL
"""
# What ANALYZE knows of jobs.type and jobs.status (autovacuum analyzes jobs after 1 % of changes, sql/054)
COLUMN_STATS = """
SELECT c.reltuples::float8 AS rows, s.attname, s.most_common_vals::text::text[] AS vals,
       s.most_common_freqs AS freqs, s.n_distinct::float8 AS n_distinct
FROM pg_class c JOIN pg_stats s ON s.tablename = c.relname AND s.schemaname = current_schema()
WHERE c.relname = 'jobs' AND c.relnamespace = to_regnamespace(current_schema()) AND s.attname IN ('type', 'status')
"""


def _frequency(stats: dict, value: str) -> Optional[float]:
    if stats is None:
        return None
    vals, freqs = list(stats["vals"] or []), list(stats["freqs"] or [])
    if value in vals:
        return float(freqs[vals.index(value)])
    others = stats["n_distinct"] if stats["n_distinct"] > 0 else -stats["n_distinct"] * stats["rows"]
    rest = max(1.0, others - len(vals))
    return max(0.0, 1.0 - sum(freqs)) / rest


def estimate_by_type(conn: Connection, rows: list[dict], cap: int) -> list[dict]:
    """Counts at the cap replaced by reltuples x frequency of the type x frequency of the status (never below the
    cap); marked exact=False."""
    capped = [row for row in rows if row["n"] > cap]
    stats = {r["attname"]: r for r in _rows(conn, COLUMN_STATS)} if capped else {}
    for row in rows:
        row["exact"] = row["n"] <= cap
        if not row["exact"]:
            f_type, f_status = _frequency(stats.get("type"), row["type"]), _frequency(stats.get("status"),
                                                                                       row["status"])
            guess = (stats["type"]["rows"] * f_type * f_status) if f_type is not None and f_status is not None else 0
            row["n"] = max(cap + 1, int(round(guess)))
    return rows


# What finished in the last hour, by type: jobs_finished_idx (status, completed_at), the last hour's range only.
FINISHED_BY_TYPE = """
SELECT type, status, count(*) AS n FROM jobs
WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at > now() - interval '1 hour'
GROUP BY type, status
"""
# Completed and failed per bucket, from the ticks' own counts (job_ticks: one row per call, a few thousand a day,
# job_ticks_started_idx): each call's counts are spread over the buckets its run overlaps, in proportion (one row
# per call and bucket it touched). Cheap whatever the throughput; a call still running counts when it ends.
THROUGHPUT = """
WITH parts AS (
    SELECT p.s, t.succeeded * o.share AS completed, t.failed * o.share AS failed
    FROM job_ticks t
    CROSS JOIN LATERAL generate_series(date_bin(CAST(:step AS interval), t.started_at, timestamptz '2000-01-01'),
                                       t.ended_at, CAST(:step AS interval)) AS p(s)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.ended_at <= t.started_at THEN 1.0
                    ELSE extract(epoch FROM least(t.ended_at, p.s + CAST(:step AS interval))
                                            - greatest(t.started_at, p.s))
                         / extract(epoch FROM t.ended_at - t.started_at) END AS share
    ) AS o
    WHERE t.started_at > now() - CAST(:span AS interval) - interval '20 minutes' AND t.ended_at IS NOT NULL
      AND (t.succeeded > 0 OR t.failed > 0)
)
SELECT b.s AS at, coalesce(sum(parts.completed), 0)::float8 AS completed,
       coalesce(sum(parts.failed), 0)::float8 AS failed
FROM generate_series(date_bin(CAST(:step AS interval), now() - CAST(:span AS interval), timestamptz '2000-01-01'),
                     now(), CAST(:step AS interval)) AS b(s)
LEFT JOIN parts ON parts.s = b.s
GROUP BY b.s
ORDER BY b.s
"""
RUNTIMES = "SELECT type, recent_s, runs, updated_at FROM job_type_runtimes ORDER BY type"


def read_alerts(conn: Connection) -> list[dict]:
    return _rows(conn, queue_health.ALERTS)


def percentile(samples: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..1) of a list; None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def by_type(rows: list[dict]) -> list[dict]:
    """[{type, status, n, exact}] -> [{type, pending, running, completed, failed, cancelled, approx: {statuses}}]
    sorted by type."""
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["type"], {"type": row["type"], **{s: 0 for s in JOB_STATUSES}, "approx": set()})
        entry[row["status"]] += int(row["n"])
        if not row.get("exact", True):
            entry["approx"].add(row["status"])
    return [table[t] for t in sorted(table)]


def live_by_type(conn: Connection) -> list[dict]:
    return estimate_by_type(conn, _rows(conn, LIVE_BY_TYPE, cap=TYPE_COUNT_CAP), TYPE_COUNT_CAP)


def overview(conn: Connection, alerts: Optional[list] = None) -> dict:
    """The overview's figures; `alerts` as read already (job_queue_alerts costs a scan of the due jobs: the
    dashboard reads it at most every ALERTS_TTL_S per process, see views.py)."""
    due = counts.bounded_count(conn, counts.DUE, cap=DUE_COUNT_CAP)
    types = by_type(live_by_type(conn) + _rows(conn, FINISHED_BY_TYPE))
    totals = {status: counts.Count(sum(t[status] for t in types), all(status not in t["approx"] for t in types))
              for status in ("pending", "running")}
    runtimes = []
    for row in _rows(conn, RUNTIMES):
        samples = [float(x) for x in row["recent_s"]]
        runtimes.append({"type": row["type"], "runs": row["runs"], "samples": len(samples),
                         "p50_s": percentile(samples, 0.5), "p95_s": percentile(samples, 0.95),
                         "updated_at": row["updated_at"]})
    return {
        # pending and running: all of them; completed, failed, cancelled: in the last hour
        "by_type": types, "totals": totals,
        "due": due, "oldest_wait_s": counts.oldest_due_wait_s(conn),
        "hour": _rows(conn, THROUGHPUT, step="1 minute", span="1 hour"),
        "day": _rows(conn, THROUGHPUT, step="30 minutes", span="24 hours"),
        "runtimes": runtimes,
        "alerts": alerts if alerts is not None else read_alerts(conn),
        "ticks": ticks.recent(conn, limit=10),
        "last_tick_age_s": ticks.last_tick_age_s(conn),
    }


# --- stores --------------------------------------------------------------------------------------------------------

# Every store with a pending job, with its real oldest due job, from the directory of store queues (sql/023: one
# row per store and priority, far fewer than jobs) plus the arrivals a claim has not merged yet: one probe of
# jobs_fair_idx per (store, priority) for its head. Rows whose bound says "none pending" are skipped.
STORE_HEADS = """
WITH pairs AS (
    SELECT store_key, priority, max(served_at) AS served_at
    FROM (SELECT store_key, priority, served_at FROM job_store_queues WHERE head_lb < 'infinity'
          UNION ALL
          SELECT store_key, priority, '-infinity'::timestamptz FROM job_store_arrivals) AS p
    GROUP BY store_key, priority
), heads AS (
    SELECT p.store_key, p.served_at, h.run_at
    FROM pairs p
    CROSS JOIN LATERAL (
        SELECT run_at FROM jobs
        WHERE status = 'pending' AND priority = p.priority AND coalesce(store_id, '') = p.store_key
        ORDER BY run_at, id LIMIT 1
    ) AS h
)
SELECT store_key,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_wait_s,
       min(run_at) AS next_run_at,
       nullif(max(served_at), '-infinity') AS served_at
FROM heads
GROUP BY store_key
"""
# The counts of one page of stores: range scans of jobs_fair_idx (due, pending) and jobs_store_status_live_idx
# (running) per store, each stopped at STORE_COUNT_CAP (shown as "10,000+").
STORE_COUNT_CAP = 10_000
STORE_COUNTS = f"""
SELECT s.store_key,
       (SELECT count(*) FROM (SELECT 1 FROM jobs j
                              WHERE j.status = 'pending' AND coalesce(j.store_id, '') = s.store_key
                                AND j.priority = ANY(CAST(:priorities AS smallint[])) AND j.run_at <= now()
                              LIMIT {STORE_COUNT_CAP + 1}) AS c)
           AS due,
       (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.status = 'pending' AND coalesce(j.store_id, '') = s.store_key
           AND j.priority = ANY(CAST(:priorities AS smallint[])) LIMIT {STORE_COUNT_CAP + 1}) AS c) AS pending,
       (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.status = 'running' AND j.store_id = nullif(s.store_key, '')
           LIMIT {STORE_COUNT_CAP + 1}) AS c) AS running
FROM unnest(CAST(:stores AS text[])) AS s(store_key)
"""
PRIORITIES = array_literal(list(range(1, 11)))


def store_counts(conn: Connection, store_keys: list[str]) -> dict[str, dict]:
    if not store_keys:
        return {}
    rows = _rows(conn, STORE_COUNTS, stores=array_literal(store_keys), priorities=PRIORITIES)
    return {row["store_key"]: row for row in rows}


def stores(conn: Connection, page: int = 1, search: Optional[str] = None) -> dict:
    heads = _rows(conn, STORE_HEADS)
    if search:
        heads = [h for h in heads if search.lower() in h["store_key"].lower()]
    # waiting longest first; then stores whose jobs are not due yet, soonest first
    far = datetime.max.replace(tzinfo=timezone.utc)
    heads.sort(key=lambda h: (h["oldest_wait_s"] is None, -(h["oldest_wait_s"] or 0), h["next_run_at"] or far,
                              h["store_key"]))
    start = (page - 1) * PAGE
    shown = heads[start:start + PAGE]
    counts = store_counts(conn, [h["store_key"] for h in shown])
    for head in shown:
        head.update({k: v for k, v in counts.get(head["store_key"], {}).items() if k != "store_key"})
    return {"stores": shown, "total": len(heads), "page": page, "pages": max(1, math.ceil(len(heads) / PAGE)),
            "waiting": sum(1 for h in heads if h["oldest_wait_s"] is not None)}


STORE_FINISHED = """
SELECT status, count(*) AS n FROM jobs
WHERE store_id = :store_id AND status IN ('completed', 'failed', 'cancelled')
  AND completed_at > now() - interval '24 hours'
GROUP BY status
"""
STORE_HEAD = """
SELECT extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_wait_s,
       min(run_at) AS next_run_at,
       (SELECT nullif(max(served_at), '-infinity') FROM job_store_queues
        WHERE store_key = coalesce(:store_id, '')) AS served_at
FROM (SELECT (SELECT run_at FROM jobs WHERE status = 'pending' AND priority = p
              AND coalesce(store_id, '') = coalesce(:store_id, '') ORDER BY run_at, id LIMIT 1) AS run_at
      FROM generate_series(1, 10) AS p) AS heads
"""


def store(conn: Connection, store_id: str) -> dict:
    head = conn.execute(text(STORE_HEAD), {"store_id": store_id}).mappings().one()
    counts = store_counts(conn, [store_id]).get(store_id, {})
    finished = {row["status"]: int(row["n"]) for row in _rows(conn, STORE_FINISHED, store_id=store_id)}
    page, _ = queries.list_jobs(conn, store_id=store_id, limit=20)
    return {"store_id": store_id, **dict(head), "due": counts.get("due", 0), "pending": counts.get("pending", 0),
            "running": counts.get("running", 0), "finished": finished, "jobs": [dict(r) for r in page]}


# --- jobs ----------------------------------------------------------------------------------------------------------

# queries.LIST_JOBS plus the error text and creation window. As there, psycopg2 sends the values inline, so the
# planner sees which filters are NULL and picks the index for the rest; keyset on id (no OFFSET).
LIST = f"""
SELECT {", ".join("jobs." + c for c in queries.JOB_COLUMNS)} FROM jobs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:status AS text) IS NOT NULL OR status = 'waiting' OR status IN ('pending', 'running')
       OR status IN ('completed', 'failed', 'cancelled'))
  AND (CAST(:job_type AS text) IS NULL OR type = CAST(:job_type AS text))
  AND (CAST(:store_id AS text) IS NULL OR store_id = CAST(:store_id AS text))
  AND (CAST(:batch_id AS text) IS NULL OR batch_id = CAST(:batch_id AS text))
  AND (CAST(:error_like AS text) IS NULL OR last_error ILIKE CAST(:error_like AS text))
  AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= CAST(:created_after AS timestamptz))
  AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < CAST(:created_before AS timestamptz))
  AND (CAST(:after AS bigint) IS NULL OR id < CAST(:after AS bigint))
ORDER BY id DESC
LIMIT :limit
"""


def jobs(conn: Connection, *, status=None, job_type=None, store_id=None, batch_id=None, error_contains=None,
         created_after=None, created_before=None, after=None, limit: int = PAGE) -> tuple[list[dict], Optional[int]]:
    rows = _rows(conn, LIST, status=status, job_type=job_type, store_id=store_id, batch_id=batch_id,
                 error_like=None if not error_contains else "%" + like_escape(error_contains) + "%",
                 created_after=created_after, created_before=created_before, after=after, limit=limit + 1)
    page = rows[:limit]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def job(conn: Connection, job_id: int) -> Optional[dict]:
    row = queries.get_job(conn, job_id)
    return None if row is None else dict(row)


def chain(conn: Connection, job_id: int) -> dict:
    """The job's workflow links: parents, children and finished steps (the first of each), the batch it is the
    on_complete job of (workflows/graph.py, one statement: what GET /jobs/<id> shows)."""
    return graph.read(conn, job_id)


# --- failed, grouped -----------------------------------------------------------------------------------------------

# Failed jobs grouped by type and normalised error (bulk.filter.normalise_error), newest group first, over a recent
# window: jobs_finished_idx (status, completed_at) gives the window's failed jobs.
FAILED_GROUPS = f"""
SELECT type, {GROUP_OF.format(column="last_error")} AS error, count(*) AS n, max(completed_at) AS newest,
       min(completed_at) AS oldest, max(id) AS example_id
FROM jobs
WHERE status = 'failed' AND completed_at > now() - CAST(:window AS interval)
GROUP BY 1, 2
ORDER BY newest DESC
LIMIT 200
"""
WINDOWS = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days", "90d": "90 days"}


def failed_groups(conn: Connection, window: str) -> list[dict]:
    return _rows(conn, FAILED_GROUPS, window=WINDOWS[window])


# --- batches -------------------------------------------------------------------------------------------------------

# One page of batch ids, newest (highest) first, by a skip scan of jobs_batch_idx (batch_id, status): one index
# probe per batch however many jobs each has; then each batch's counts per status (index-only, that batch's range).
BATCH_IDS = """
WITH RECURSIVE ids AS (
    (SELECT batch_id FROM jobs
     WHERE batch_id IS NOT NULL AND (CAST(:before AS text) IS NULL OR batch_id < CAST(:before AS text))
     ORDER BY batch_id DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.batch_id FROM jobs j WHERE j.batch_id IS NOT NULL AND j.batch_id < ids.batch_id
            ORDER BY j.batch_id DESC LIMIT 1)
    FROM ids WHERE ids.batch_id IS NOT NULL
)
SELECT batch_id FROM ids WHERE batch_id IS NOT NULL LIMIT :limit
"""
BATCH_COUNTS = """
SELECT b.batch_id, j.status, count(j.*) AS n
FROM unnest(CAST(:ids AS text[])) AS b(batch_id)
JOIN jobs j ON j.batch_id = b.batch_id
GROUP BY b.batch_id, j.status
"""


def batches(conn: Connection, before: Optional[str] = None, search: Optional[str] = None) -> tuple[list, Optional[str]]:
    if search:
        ids = [search]
    else:
        ids = [r["batch_id"] for r in _rows(conn, BATCH_IDS, before=before, limit=PAGE + 1)]
    more = len(ids) > PAGE
    ids = ids[:PAGE]
    table = {i: {"batch_id": i, "total": 0, **{s: 0 for s in JOB_STATUSES}} for i in ids}
    if ids:
        for row in _rows(conn, BATCH_COUNTS, ids=array_literal(ids)):
            table[row["batch_id"]][row["status"]] += int(row["n"])
            table[row["batch_id"]]["total"] += int(row["n"])
    out = []
    for batch_id in ids:
        entry = table[batch_id]
        if entry["total"] == 0:
            continue
        finished = entry["completed"] + entry["failed"] + entry["cancelled"]
        entry["finished"], entry["progress"] = finished, finished / entry["total"]
        out.append(entry)
    return out, (ids[-1] if more else None)


# --- schedules -----------------------------------------------------------------------------------------------------

SCHEDULE_LAST_JOBS = """
SELECT id, status, created_at, completed_at, last_error FROM jobs WHERE id = ANY(CAST(:ids AS bigint[]))
"""


def last_jobs(conn: Connection, job_ids: list[int]) -> dict[int, dict]:
    if not job_ids:
        return {}
    return {row["id"]: row for row in _rows(conn, SCHEDULE_LAST_JOBS, ids=array_literal(job_ids))}
