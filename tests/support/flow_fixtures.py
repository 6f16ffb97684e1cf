"""Tenant flow control as the tests see it: the pure rule's Flow, computed from the tables (sql/027) by Python of
its own -- an independent reading of what the claim must honour -- and small helpers to configure it."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import text

from jobprocessor.policies.fairness import Flow


def flow_from_db(engine) -> Flow:
    """What one claim starting now must honour: pauses, quota holds in force, and each store's allowance (its
    limits -- its own row's value, else the every-store row's, field by field -- less its live leases and its
    claims of the last minute), per type too, and weights."""
    with engine.connect() as conn:
        pauses = conn.execute(text("SELECT store_id, type FROM job_pauses")).all()
        holds = conn.execute(text("SELECT store_key, type FROM job_store_quota_holds WHERE until > now()")).all()
        limits = {(r.store_id, r.type): r for r in conn.execute(text("SELECT * FROM job_store_limits"))}
        running = Counter({(r.store_id, r.type): r.n for r in conn.execute(text(
            "SELECT store_id, type, count(*) AS n FROM jobs WHERE status = 'running' AND locked_until > now() "
            "AND store_id IS NOT NULL GROUP BY 1, 2"))})
        started = Counter({(r.store_key, r.type): r.n for r in conn.execute(text(
            "SELECT store_key, type, sum(jobs) AS n FROM job_store_starts "
            "WHERE claimed_at > now() - interval '1 minute' GROUP BY 1, 2"))})
        stores = [r[0] for r in conn.execute(text("SELECT DISTINCT store_id FROM jobs WHERE store_id IS NOT NULL"))]
    types = {t for (_, t) in limits if t is not None}

    def value(store, job_type, field):
        own, every = limits.get((store, job_type)), limits.get((None, job_type))
        if own is not None and getattr(own, field) is not None:
            return getattr(own, field)
        return getattr(every, field) if every is not None else None

    def left(store, job_type, used_running, used_started):
        bounds = []
        if value(store, job_type, "max_running") is not None:
            bounds.append(value(store, job_type, "max_running") - used_running)
        if value(store, job_type, "max_starts_per_minute") is not None:
            bounds.append(value(store, job_type, "max_starts_per_minute") - used_started)
        return min(bounds) if bounds else None

    allowance, type_allowance, weights = {}, {}, {}
    for store in stores:
        whole = left(store, None, sum(n for (s, _), n in running.items() if s == store),
                     sum(n for (s, _), n in started.items() if s == store))
        if whole is not None:
            allowance[store] = whole
        for job_type in types:
            own = left(store, job_type, running[store, job_type], started[store, job_type])
            if own is not None:
                type_allowance[(store, job_type)] = own
        if value(store, None, "weight") is not None:
            weights[store] = value(store, None, "weight")
    return Flow(paused_types=frozenset(t for s, t in pauses if s is None),
                paused_stores=frozenset(s for s, t in pauses if t is None),
                paused_pairs=frozenset({(s, t) for s, t in pauses if s is not None and t is not None}
                                       | {(s, t) for s, t in holds}),
                allowance=allowance, type_allowance=type_allowance, weights=weights)


def pause(engine, store_id=None, job_type=None) -> int:
    with engine.begin() as conn:
        return conn.execute(text("INSERT INTO job_pauses (store_id, type) VALUES (:s, :t) RETURNING id"),
                            {"s": store_id, "t": job_type}).scalar()


def set_limit(engine, store_id=None, job_type=None, **fields) -> None:
    columns = ["store_id", "type", *fields]
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO job_store_limits ({', '.join(columns)}) VALUES "
                          f"({', '.join(':' + c for c in columns)})"),
                     {"store_id": store_id, "type": job_type, **fields})
