"""Rows for a test and a look at them: jobs inserted in one statement, jobs fetched, cron ticks until idle."""
from __future__ import annotations

from sqlalchemy import text


def insert_jobs(engine, n: int, job_type: str = "test.echo", **columns) -> list[int]:
    """n jobs in one statement; columns are SQL expressions over g (1..n), e.g. store_id="'s' || (g % 3)"."""
    names = ["type"] + list(columns)
    values = [f"'{job_type}'"] + list(columns.values())
    sql = (f"INSERT INTO jobs ({', '.join(names)}) SELECT {', '.join(values)} FROM generate_series(1, :n) AS g "
           "RETURNING id")
    with engine.begin() as conn:
        return [row[0] for row in conn.execute(text(sql), {"n": n})]


def fetch_jobs(engine, where: str = "true", **params) -> list:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT * FROM jobs WHERE {where} ORDER BY id"), params).mappings().all()


def drain_until_idle(call, idle_calls: int = 3) -> list:
    """Call `call()` (one cron tick, returning a dict or RunSummary) until `idle_calls` ticks in a row claim
    nothing; other callers may still be finishing what they hold. Returns every tick's result."""
    results, idle = [], 0
    while idle < idle_calls:
        result = call()
        results.append(result)
        claimed = result["claimed"] if isinstance(result, dict) else result.claimed
        idle = idle + 1 if claimed == 0 else 0
    return results
