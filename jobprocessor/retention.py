"""The history tables' retention (system.cleanup): a bounded DELETE run batch by batch, each in its own short
transaction, so pruning a long history never holds locks or one long transaction (job_ticks: ticks.py; job_actions:
bulk/log.py)."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine


def delete_in_batches(engine: Engine, statement: str, params: dict, batch: int, max_batches: int) -> int:
    """Run `statement` (a DELETE of at most :batch rows) until one deletes fewer or `max_batches` ran; returns how
    many rows went."""
    deleted = 0
    for _ in range(max_batches):
        with engine.begin() as conn:
            gone = conn.execute(text(statement), dict(params, batch=batch)).rowcount
        deleted += gone
        if gone < batch:
            break
    return deleted
