"""What OpenAI answers use, per job type and model, in PostgreSQL (tables openai_output_stats and
openai_output_retry_caps, sql/031_openai_output_stats_v1.sql), shared by every process and instance: the output cap
each call sends follows it (policies/output_cap.py).

Reading is one statement; recording an answer is one short transaction that locks its (type, model) row (SELECT ...
FOR UPDATE), lets the pure estimator add the answer and writes the row back. Nothing is held across an HTTP call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..policies import output_cap
from ..policies.output_cap import OutputStats

STALE_RETRY_CAPS = "1 day"  # retry caps this old belong to jobs that were cancelled or failed meanwhile

READ = """
SELECT s.weights, s.answers, s.cut_offs, r.cap AS retry_cap
FROM (SELECT 1) AS one
LEFT JOIN openai_output_stats s ON s.job_type = :job_type AND s.model = :model
LEFT JOIN openai_output_retry_caps r ON r.job_id = CAST(:job_id AS bigint)
"""

LOCK_ROW = """
SELECT weights, answers, cut_offs FROM openai_output_stats WHERE job_type = :job_type AND model = :model
FOR UPDATE
"""

CREATE_ROW = """
INSERT INTO openai_output_stats (job_type, model) VALUES (:job_type, :model)
ON CONFLICT (job_type, model) DO NOTHING
"""

# the answer, and (a whole answer) the end of the job's retry cap: one statement
SAVE_ROW = """
WITH cleared AS (
    DELETE FROM openai_output_retry_caps WHERE CAST(:clear AS boolean) AND job_id = CAST(:job_id AS bigint)
    RETURNING 1
)
UPDATE openai_output_stats
SET weights = CAST(:weights AS float8[]), answers = :answers, cut_offs = :cut_offs, updated_at = now()
WHERE job_type = :job_type AND model = :model
"""

# A rescheduled cut-off job's next cap (kept at the larger one if it is written twice), and the stale rows pruned.
SET_RETRY_CAP = f"""
WITH saved AS (
    INSERT INTO openai_output_retry_caps (job_id, cap) VALUES (CAST(:job_id AS bigint), :cap)
    ON CONFLICT (job_id) DO UPDATE SET cap = greatest(openai_output_retry_caps.cap, excluded.cap),
                                       recorded_at = excluded.recorded_at
    RETURNING 1
)
DELETE FROM openai_output_retry_caps
WHERE recorded_at < now() - interval '{STALE_RETRY_CAPS}' AND job_id <> CAST(:job_id AS bigint)
"""

CLEAR_RETRY_CAP = "DELETE FROM openai_output_retry_caps WHERE job_id = CAST(:job_id AS bigint)"

# a cut-off that is not added as an answer (an escalated retry's) is still counted, for the operators
COUNT_CUT_OFF = """
INSERT INTO openai_output_stats AS s (job_type, model, cut_offs) VALUES (:job_type, :model, 1)
ON CONFLICT (job_type, model) DO UPDATE SET cut_offs = s.cut_offs + 1, updated_at = now()
"""

LIST_ROWS = "SELECT job_type, model, weights, answers, cut_offs FROM openai_output_stats ORDER BY job_type, model"


@dataclass(frozen=True)
class CapView:
    """What a call reads before it asks: the shared estimate and, for a rescheduled cut-off job, its own cap."""

    stats: OutputStats
    retry_cap: Optional[int]

    def caps(self, max_output: int) -> tuple[int, int]:
        """(the shared cap, the cap this job's call sends), both within [1, max_output]."""
        shared = output_cap.output_cap(self.stats, max_output)
        own = min(max_output, self.retry_cap) if self.retry_cap else 0
        return shared, max(shared, own)


def _stats(row) -> OutputStats:
    if row is None or row["answers"] is None:
        return OutputStats()
    return OutputStats(tuple(row["weights"] or ()), int(row["answers"]), int(row["cut_offs"]))


class OutputStatsStore:
    """Stateless itself: every method is one transaction on `engine`."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def read(self, job_type: str, model: str, job_id: Optional[int] = None) -> CapView:
        with self.engine.connect() as conn:
            row = conn.execute(text(READ), {"job_type": job_type, "model": model,
                                            "job_id": job_id}).mappings().first()
        return CapView(_stats(row), int(row["retry_cap"]) if row["retry_cap"] is not None else None)

    def record(self, job_type: str, model: str, *, tokens: Optional[int], cut_off: bool = False,
               job_id: Optional[int] = None, retry_cap: Optional[int] = None) -> Optional[OutputStats]:
        """Add one answer of `tokens` (None: add none; a cut-off is counted anyway) and set the job's retry cap
        (None: clear it, the job got a whole answer). Returns the stats after it (None when no answer was added)."""
        stats = None
        with self.engine.begin() as conn:
            if tokens is None and cut_off:
                conn.execute(text(COUNT_CUT_OFF), {"job_type": job_type, "model": model})
            if tokens is not None:
                key = {"job_type": job_type, "model": model}
                row = conn.execute(text(LOCK_ROW), key).mappings().first()
                if row is None:  # first answer: concurrent creators, one inserts, all then lock it
                    conn.execute(text(CREATE_ROW), key)
                    row = conn.execute(text(LOCK_ROW), key).mappings().first()
                stats = output_cap.observe(_stats(row), tokens, cut_off=cut_off)
                clear = job_id is not None and retry_cap is None
                conn.execute(text(SAVE_ROW), {**key, "weights": list(stats.weights), "answers": stats.answers,
                                              "cut_offs": stats.cut_offs, "clear": clear, "job_id": job_id})
            if job_id is not None and retry_cap is not None:
                conn.execute(text(SET_RETRY_CAP), {"job_id": job_id, "cap": int(retry_cap)})
            elif job_id is not None and tokens is None:
                conn.execute(text(CLEAR_RETRY_CAP), {"job_id": job_id})
        return stats

    def summary(self, max_output: int) -> list[dict]:
        """Per (job type, model): the cap calls send now, the percentile it follows, and the counts."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(LIST_ROWS)).mappings().all()
        result = []
        for row in rows:
            stats = _stats(row)
            result.append({"job_type": row["job_type"], "model": row["model"],
                           "max_completion_tokens": output_cap.output_cap(stats, max_output),
                           "p99_completion_tokens": output_cap.percentile_tokens(stats),
                           "answers": stats.answers, "cut_offs": stats.cut_offs})
        return result
