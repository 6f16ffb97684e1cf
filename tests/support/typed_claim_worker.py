"""A separate OS process that claims with a set of types until the queue has nothing due for it (used by the
multi-process test of the fair claim with types)."""
import time

from sqlalchemy import create_engine

from jobprocessor import queries
from jobprocessor.config import normalise_database_url


def claim_until_idle(database_url: str, name: str, job_types, start, results) -> None:
    engine = create_engine(normalise_database_url(database_url), pool_size=1)
    claimed, windows, idle = [], [], 0
    try:
        start.wait(60)
        while idle < 3:
            began = time.time()
            with engine.begin() as conn:
                rows = queries.claim(conn, limit=20, worker=name, lease_s=300, job_types=job_types).jobs
            windows.append((began, time.time()))
            claimed += [(row["id"], row["type"]) for row in rows]
            idle = 0 if rows else idle + 1
        results.put((name, claimed, windows, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((name, claimed, windows, repr(exc)))
    finally:
        engine.dispose()
