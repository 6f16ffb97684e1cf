"""Claimed rows (jobprocessor/claimed.py) against real PostgreSQL: what a claim returns reads as the mappings did,
payloads decoded when read, and the connection's jsonb decoding left as it was, whatever the claim did."""
import json

import psycopg2.extensions
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from jobprocessor import claimed, queries
from tests.support.db import insert_jobs

PAYLOAD = {"sku": "A-1", "nested": {"list": [1, 2.5, None, "é"]}, "flag": True}

# the claim around a `due` step of our own: every claim_order NULL, so the FIFO key alone orders the jobs
NULL_ORDER_DUE = """
due AS (
    SELECT id, CAST(NULL AS integer) AS claim_order FROM jobs
    WHERE status = 'pending' AND run_at <= now()
    ORDER BY id DESC
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)"""


def claim(conn, limit=10, **kwargs):
    return queries.claim(conn, limit=limit, worker="w", lease_s=60, **kwargs)


def test_a_claimed_row_reads_by_name_key_and_as_a_dict(engine):
    (job_id,) = insert_jobs(engine, 1, "test.echo", payload=f"CAST('{json.dumps(PAYLOAD)}' AS jsonb)",
                            store_id="'s1'")
    with engine.begin() as conn:
        (row,) = claim(conn).jobs
    assert row.id == row["id"] == job_id and row.type == row["type"] == "test.echo"
    assert row.store_id == row.get("store_id") == "s1" and row.get("no such column", "x") == "x"
    assert row.payload == row["payload"] == PAYLOAD  # decoded when read, as psycopg2 decodes jsonb
    assert json.loads(row.payload_json) == PAYLOAD
    as_dict = dict(row)
    assert set(queries.CLAIMED_COLUMNS) <= set(as_dict) and "payload_json" not in as_dict
    assert as_dict["payload"] == PAYLOAD and as_dict["attempts"] == 0
    with pytest.raises(KeyError):
        row["no such column"]


def test_the_connection_decodes_jsonb_as_before_after_a_claim(engine):
    insert_jobs(engine, 2, "test.echo", payload="CAST('{\"a\": 1}' AS jsonb)")
    with engine.begin() as conn:
        assert claim(conn, limit=1).jobs[0].payload == {"a": 1}
        assert claimed.JSONB_OID not in conn.connection.dbapi_connection.string_types
        assert conn.execute(text("SELECT payload FROM jobs LIMIT 1")).scalar_one() == {"a": 1}


def test_a_claim_that_fails_leaves_the_connection_decoding_jsonb(engine):
    with engine.connect() as conn:
        with pytest.raises(DBAPIError):
            queries.run_claim(conn, "SELECT 1 / 0", limit=1, worker="w", lease_s=60)
        assert claimed.JSONB_OID not in conn.connection.dbapi_connection.string_types


def test_a_connections_own_jsonb_decoder_is_put_back(engine):
    insert_jobs(engine, 1, "test.echo", payload="CAST('{\"a\": 1}' AS jsonb)")
    own = psycopg2.extensions.new_type((claimed.JSONB_OID,), "OWN", lambda value, cursor: ("own", value))
    with engine.begin() as conn:
        dbapi = conn.connection.dbapi_connection
        psycopg2.extensions.register_type(own, dbapi)
        try:
            assert claim(conn).jobs[0].payload == {"a": 1}
            assert dbapi.string_types[claimed.JSONB_OID] is own
        finally:
            dbapi.string_types.pop(claimed.JSONB_OID, None)


def test_jobs_without_distinct_claim_orders_come_in_fifo_order(engine):
    # ids 1..6: priorities and run_at so that (priority, run_at, id) is neither id order nor its reverse
    ids = insert_jobs(engine, 6, "test.echo", priority="CASE WHEN g % 2 = 0 THEN 1 ELSE 2 END",
                      run_at="now() - make_interval(secs => CASE WHEN g IN (3, 4) THEN 100 ELSE 50 END)")
    with engine.begin() as conn:
        jobs = queries.run_claim(conn, queries.claim_around(NULL_ORDER_DUE), limit=10, worker="w", lease_s=60).jobs
        expected = [r.id for r in conn.execute(text(
            "SELECT id FROM jobs WHERE id = ANY(:ids) ORDER BY priority, run_at, id"), {"ids": ids})]
    assert [row.id for row in jobs] == expected and expected != sorted(expected)
    assert all(row.claim_order is None for row in jobs)
