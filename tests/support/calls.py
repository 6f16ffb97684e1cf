"""A /process-pending call from a test (the processor itself, with setting overrides) and what it left behind."""
from __future__ import annotations

import dataclasses

from sqlalchemy import text

from jobprocessor.processor import process_pending
from tests.support.db import fetch_jobs


def run(app, engine, settings, limit=1000, budget_s=20.0, **overrides):
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    return process_pending(engine, settings, limit=limit, budget_s=budget_s, app=app)


def one(engine, job_id):
    (job,) = fetch_jobs(engine, "id = :id", id=job_id)
    return job


def executions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM job_executions")).scalar_one()


def samples(engine, job_type: str) -> list[float]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT recent_s FROM job_type_runtimes WHERE type = :t"), {"t": job_type}).first()
    return [] if row is None else list(row.recent_s)
