"""job.step(name, fn): run fn once per job, keep its JSON result, return the kept result on every later run.

A handler that calls an expensive service (an OpenAI rewrite) in steps pays for each step once, even when its run
ends half-way: the process is killed, the call's budget cuts it short, or it raises and is retried. Each step's
result is written in a short transaction of its own as soon as fn returns (job_steps, sql/013_jobs_workflows_v1.sql),
not at the end of the job; a later run reads the job's steps once, at its first step() call.

What a step returns is its result as stored (the JSON round trip: a tuple comes back as a list), the same on the
first run as on every later one. A result that JSON cannot hold, or larger than JOBS_MAX_STEP_BYTES, fails the job
(PermanentError): it would fail again. Two runs of one job at once (a run past its lease and the run that rescued
it) may both run a step; the first result stored wins, and both get it.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..job import PermanentError

MAX_STEPS_PER_JOB = 1000
MAX_NAME_LENGTH = 200
WRITE_ATTEMPTS = 3  # a step's result is written again after a failed write, before the handler is failed

LOAD = "SELECT name, result::text AS result FROM job_steps WHERE job_id = :job_id"

# WHERE EXISTS: a job deleted meanwhile leaves no step behind (steps go with their job: the DELETE trigger)
STORE = """
INSERT INTO job_steps (job_id, name, result)
SELECT :job_id, :name, CAST(:result AS jsonb) WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id)
ON CONFLICT (job_id, name) DO NOTHING
RETURNING result::text
"""

STORED = "SELECT result::text FROM job_steps WHERE job_id = :job_id AND name = :name"


class StepStore:
    """One run's view of its job's steps."""

    def __init__(self, engine: Engine, job_id: int, max_bytes: int):
        self.engine, self.job_id, self.max_bytes = engine, job_id, max_bytes
        self._done: Optional[dict[str, str]] = None  # name -> stored JSON

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
            raise PermanentError(f"a step name must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
        if self._done is None:
            with self.engine.connect() as conn:
                self._done = dict(conn.execute(text(LOAD), {"job_id": self.job_id}).all())
        if name in self._done:
            return json.loads(self._done[name])
        if len(self._done) >= MAX_STEPS_PER_JOB:
            raise PermanentError(f"step {name!r}: a job keeps at most {MAX_STEPS_PER_JOB} steps")
        document = self._document(name, fn())
        self._done[name] = self._store(name, document)
        return json.loads(self._done[name])

    def _document(self, name: str, result: Any) -> str:
        from ..executor import result_json

        try:
            document = result_json(result)
        except (TypeError, ValueError, RecursionError) as exc:
            raise PermanentError(f"step {name!r}: its result cannot be stored as JSON ({exc})") from None
        if len(document.encode()) > self.max_bytes:
            raise PermanentError(f"step {name!r}: its result is larger than JOBS_MAX_STEP_BYTES ({self.max_bytes} "
                                 "bytes as JSON)")
        return document

    def _store(self, name: str, document: str) -> str:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    stored = conn.execute(text(STORE), {"job_id": self.job_id, "name": name,
                                                        "result": document}).scalar()
                    if stored is None:  # another run of the job stored it first (or the job is gone)
                        stored = conn.execute(text(STORED), {"job_id": self.job_id, "name": name}).scalar()
                return document if stored is None else stored
            except Exception:  # the database may be back in a moment; the result is in hand
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")
