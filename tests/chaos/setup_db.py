"""A fresh database for a chaos or load run: schema by the real migrations, plus the test-only tables the fault
handlers and the audit trail write (job_executions, job_transitions). Never the test suite's database."""
from __future__ import annotations

from sqlalchemy import create_engine, text

from jobprocessor import create_app
from jobprocessor.config import normalise_database_url
from tests.support import transitions
from tests.support.settings import make_settings


def fresh_database(database_url: str, audit: bool = True):
    """Drop and rebuild the schema; returns an engine on it (pool large enough for the checks)."""
    engine = create_engine(normalise_database_url(database_url), pool_size=5)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    from flask_migrate import upgrade

    app = create_app(make_settings(database_url))
    with app.app_context():
        upgrade()
        from jobprocessor.extensions import db

        db.engine.dispose()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE job_executions (job_id bigint NOT NULL, pid int NOT NULL, "
                          "attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
    if audit:
        transitions.install(engine)
    return engine
