"""The execution log of the tests' handlers: one row in job_executions per handler start (the test session and the
chaos runs create that table), which is how tests prove that every job ran exactly once."""
import os

from sqlalchemy import text

from jobprocessor.extensions import db


def record_execution(job) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO job_executions (job_id, pid, attempt) VALUES (:id, :pid, :attempt)"),
                     {"id": job.id, "pid": os.getpid(), "attempt": job.attempts})
