"""The shipped storage and autovacuum settings of jobs (sql/054_jobs_storage_v1.sql, then _v2.sql), as the migrations
leave them: v2 replaces v1's vacuum trigger (1000 + 1% dead rows) by a fixed count, and keeps the rest of v1."""
from __future__ import annotations

from sqlalchemy import text


def jobs_reloptions(engine) -> dict:
    with engine.connect() as conn:
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")).scalar_one()
    return dict(option.split("=", 1) for option in options)


def test_vacuum_after_a_fixed_number_of_dead_rows_whatever_the_size(engine):
    options = jobs_reloptions(engine)
    assert options["autovacuum_vacuum_threshold"] == "10000"
    assert options["autovacuum_vacuum_scale_factor"] == "0"


def test_the_rest_of_v1_stays(engine):
    options = jobs_reloptions(engine)
    assert {k: options[k] for k in ("fillfactor", "vacuum_index_cleanup", "autovacuum_vacuum_cost_delay",
                                    "autovacuum_vacuum_insert_threshold", "autovacuum_analyze_threshold")} == {
        "fillfactor": "90", "vacuum_index_cleanup": "on", "autovacuum_vacuum_cost_delay": "0",
        "autovacuum_vacuum_insert_threshold": "1000", "autovacuum_analyze_threshold": "1000"}
