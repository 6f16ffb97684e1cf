"""Shared fixtures: a real PostgreSQL (TEST_DATABASE_URL, set by scripts/test.sh; else the embedded server), a
schema built by the real migrations once per session, and a clean jobs table per test."""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from jobprocessor import create_app
from jobprocessor.config import Settings, normalise_database_url
from tests.support.settings import make_settings

TEST_STATEMENT_TIMEOUT_MS = 120_000  # longer than any statement of the suite takes, shorter than a stuck run


def _database_url() -> str:
    """The session's database: TEST_DATABASE_URL's (else the embedded server's jobprocessor_test); under
    pytest-xdist each worker gets a database of its own beside it (`<name>_gw0`, ...), created as needed, so the
    workers' schemas, truncations and advisory locks never meet."""
    from jobprocessor import devdb

    url = devdb.database_url("TEST_DATABASE_URL", "jobprocessor_test")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{worker}"
    admin = create_engine(normalise_database_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def database_url() -> str:
    url = _database_url()
    engine = create_engine(normalise_database_url(url))
    with engine.begin() as conn:  # a fresh schema each session, built by the real migrations
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        # a statement that never ends (a claim that loops) fails its test: pytest-timeout cannot interrupt a wait
        # inside libpq, so the server ends it (every session of the test database, processes the tests start too)
        name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{name}" SET statement_timeout = {TEST_STATEMENT_TIMEOUT_MS}'))
    engine.dispose()
    from flask_migrate import upgrade

    app = create_app(make_settings(url))
    with app.app_context():
        upgrade()
        from jobprocessor.extensions import db

        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE job_executions (job_id bigint NOT NULL, pid int NOT NULL, "
                              "attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
            # each run of a job.step() function (tests/support/workflow_handlers.py)
            conn.execute(text("CREATE TABLE step_runs (job_id bigint NOT NULL, name text NOT NULL, pid int NOT NULL, "
                              "attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
            # test.span: when each run of a handler started and ended (the flow-control tests count overlaps)
            conn.execute(text("CREATE TABLE job_spans (job_id bigint NOT NULL, store_id text, pid int NOT NULL, "
                              "started_at timestamptz NOT NULL DEFAULT clock_timestamp(), ended_at timestamptz)"))
        db.engine.dispose()
    return url


@pytest.fixture(scope="session")
def raw_engine(database_url):
    engine = create_engine(normalise_database_url(database_url), pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(raw_engine):
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_executions, jobs_archive, job_schedules, job_store_queues, job_ticks, "
                          "job_type_runtimes, job_dependencies, job_steps, job_batch_callbacks, step_runs, "
                          "job_actions, dashboard_signin_failures, job_pauses, job_store_limits, "
                          "job_store_starts, job_store_quota_holds, job_spans "
                          "RESTART IDENTITY"))
    return raw_engine


@pytest.fixture
def settings(database_url) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings, clean_db):
    app = create_app(settings)
    app.config["TESTING"] = True
    with app.app_context():
        yield app
        from jobprocessor.extensions import db

        db.engine.dispose()


@pytest.fixture
def engine(app):
    from jobprocessor.extensions import db

    return db.engine


@pytest.fixture
def client(app):
    return app.test_client()
