"""A separate OS process that drains the queue through process_pending (used by the multi-process tests)."""
from jobprocessor import create_app
from jobprocessor.extensions import db
from jobprocessor.processor import process_pending


def drain(database_url: str, secret: str, limit: int, totals) -> None:
    from tests.conftest import make_settings

    settings = make_settings(database_url, JOBS_CONCURRENCY=4, DB_POOL_MAX=20, CRON_SECRET=secret)
    app = create_app(settings)
    claimed = 0
    with app.app_context():
        idle = 0
        while idle < 3:  # a few empty calls in a row: the queue is drained (others may still hold jobs)
            summary = process_pending(db.engine, settings, limit=limit, budget_s=30, app=app)
            claimed += summary.claimed
            idle = idle + 1 if summary.claimed == 0 else 0
    totals.put(claimed)
