"""The connection pool: DB_POOL_MIN opened up front, every connection kept once opened, DB_POOL_MAX the bound."""
import threading

from jobprocessor import create_app, warm_pool
from jobprocessor.extensions import db
from tests.support.settings import make_settings


def test_warm_pool_opens_min_and_bursts_do_not_churn(database_url):
    app = create_app(make_settings(database_url, DB_POOL_MIN=3, DB_POOL_MAX=6))
    opened = []
    with app.app_context():
        from sqlalchemy import event

        engine = db.engine  # the burst threads have no app context of their own
        event.listen(engine, "connect", lambda *a: opened.append(1))
        assert warm_pool(app) == 3
        assert db.engine.pool.checkedin() == 3 and len(opened) == 3
        barrier = threading.Barrier(6)

        def burst():
            with engine.connect():
                barrier.wait(10)  # six connections out at once

        for _ in range(3):  # three bursts to the bound: connections are opened once, then reused
            threads = [threading.Thread(target=burst) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
        assert len(opened) == 6
        assert db.engine.pool.checkedin() == 6
        db.engine.dispose()


def test_warm_pool_with_the_database_down_is_not_fatal():
    from tests.support.gunicorn import free_port

    app = create_app(make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/none", DB_POOL_MIN=2))
    assert warm_pool(app) == 0
