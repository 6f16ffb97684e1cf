"""The job statuses are defined once, in jobprocessor/job.py: the migrated schema's CHECK constraint allows exactly
those, and the API, the dashboard and the workflows use that tuple."""
from __future__ import annotations

import re

from sqlalchemy import text

from jobprocessor.job import FINISHED_STATUSES, JOB_STATUSES


def test_the_check_constraint_allows_exactly_the_job_statuses(raw_engine):
    with raw_engine.connect() as conn:
        definition = conn.execute(text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check'")).scalar_one()
    # CHECK ((status = ANY (ARRAY['waiting'::text, 'pending'::text, ...])))
    allowed = tuple(re.findall(r"'([a-z_]+)'::text", definition))
    assert allowed == JOB_STATUSES, definition


def test_finished_statuses_are_job_statuses():
    assert FINISHED_STATUSES and set(FINISHED_STATUSES) < set(JOB_STATUSES)


def test_the_api_offers_the_job_statuses(client):
    from tests.support.settings import AUTH

    spec = client.get("/openapi.json", headers=AUTH).get_json()
    parameters = spec["paths"]["/jobs"]["get"]["parameters"]
    assert next(p for p in parameters if p["name"] == "status")["schema"]["enum"] == list(JOB_STATUSES)
    response = client.get("/jobs?status=nonsense", headers=AUTH)
    assert response.status_code == 400 and all(s in response.get_json()["message"] for s in JOB_STATUSES)
