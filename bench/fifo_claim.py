"""The plain FIFO claim, the baseline the benchmarks compare the fair claim with (it is not used by the service).

The FIFO selection the fair one replaced, kept as the baseline of bench/fair_claim.py: highest priority first,
then oldest, then id (jobs_claim_idx is exactly this order and predicate, so the scan stops after LIMIT rows).
FOR UPDATE SKIP LOCKED lets any number of callers claim at once: each skips rows another caller is locking instead
of waiting for it. The CTE is an optimisation fence: LIMIT applies to the locked selection, so the UPDATE can never
touch more rows than asked for.
"""
from __future__ import annotations

from typing import Optional, Sequence

from sqlalchemy.engine import Connection

from jobprocessor import queries

FIFO_DUE_CTE = """
due AS (
    SELECT id, CAST(NULL AS integer) AS claim_order FROM jobs
    WHERE status = 'pending' AND run_at <= now()
      AND (CAST(:job_types AS text[]) IS NULL OR type = ANY (CAST(:job_types AS text[])))
    ORDER BY priority, run_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)"""

FIFO_CLAIM = queries.claim_around(FIFO_DUE_CTE)


def claim_fifo(conn: Connection, *, limit: int, worker: str, lease_s: float,
               job_types: Optional[Sequence[str]] = None, rescue_limit: int = 1000,
               start_types: Sequence[str] = ()) -> queries.ClaimResult:
    """Rescue expired leases and lease up to `limit` due jobs oldest first regardless of store, in one statement."""
    return queries.run_claim(conn, FIFO_CLAIM, limit=limit, worker=worker, lease_s=lease_s, job_types=job_types,
                             rescue_limit=rescue_limit, start_types=start_types)
