"""A separate OS process that drains the queue through process_pending (used by the multi-process tests)."""
from jobprocessor import create_app
from jobprocessor.extensions import db
from jobprocessor.processor import process_pending


def drain(database_url: str, secret: str, limit: int, totals) -> None:
    from tests.support.db import drain_until_idle
    from tests.support.settings import make_settings

    settings = make_settings(database_url, JOBS_CONCURRENCY=4, DB_POOL_MAX=20, CRON_SECRET=secret)
    app = create_app(settings)
    with app.app_context():
        ticks = drain_until_idle(lambda: process_pending(db.engine, settings, limit=limit, budget_s=30, app=app))
    totals.put(sum(t.claimed for t in ticks))
