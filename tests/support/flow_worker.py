"""A separate OS process that keeps calling process_pending (the real pipeline, JOBS_CONCURRENCY threads) until the
test says stop (or a deadline): the flow-control tests run eight of them at once."""
import time

from jobprocessor import create_app
from jobprocessor.extensions import db
from jobprocessor.processor import process_pending


def run_until(database_url: str, secret: str, start, stop, max_s: float, results) -> None:
    from tests.support.settings import make_settings

    settings = make_settings(database_url, JOBS_CONCURRENCY=8, DB_POOL_MAX=20, CRON_SECRET=secret)
    app = create_app(settings)
    claimed, error = 0, None
    try:
        with app.app_context():
            start.wait(120)
            stop_at = time.monotonic() + max_s
            while not stop.is_set() and time.monotonic() < stop_at:
                summary = process_pending(db.engine, settings, limit=1000, budget_s=1, app=app)
                claimed += summary.claimed
                if summary.claimed == 0:
                    time.sleep(0.05)
            db.engine.dispose()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        error = repr(exc)
    results.put((claimed, error))
