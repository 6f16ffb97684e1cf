"""queries.py helpers against real PostgreSQL."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobprocessor.handlers import RetryLater
from jobprocessor.pgarray import array_literal

# what a text column can hold: any character but NUL, no lone surrogates (they are not UTF-8)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), TEXT), max_size=20))
def test_text_array_literal_round_trips(raw_engine, values):
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT CAST(:a AS text[])"), {"a": array_literal(values)}).scalar_one() == values


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=20),
       ids=st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), max_size=20))
def test_number_array_literals_round_trip(raw_engine, values, ids):
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT CAST(:a AS float8[])"), {"a": array_literal(values)}).scalar_one() == values
        assert conn.execute(text("SELECT CAST(:a AS bigint[])"), {"a": array_literal(ids)}).scalar_one() == ids


def test_array_literal_refuses_what_it_cannot_encode():
    with pytest.raises(TypeError):
        array_literal([True])
    with pytest.raises(TypeError):
        array_literal([object()])
    with pytest.raises(TypeError):
        array_literal([1, True])  # equal to the element before it, but not an int


def test_array_literal_of_a_batch_that_repeats_its_values(raw_engine):
    # a FINISH batch: the same status, result and error objects over and over, equal numbers of other types
    completed, quoted = "completed", 'a "b" \\ c'
    values = [completed, completed, None, None, quoted, quoted, completed]
    escaped = '"a \\"b\\" \\\\ c"'
    assert array_literal(values) == '{"completed","completed",NULL,NULL,' + escaped + "," + escaped + ',"completed"}'
    with raw_engine.connect() as conn:
        assert conn.execute(text("SELECT CAST(:a AS text[])"), {"a": array_literal(values)}).scalar_one() == values
    assert array_literal([1, 1, 1.0, 1.0, 0, 0.0]) == "{1,1,1.0,1.0,0,0.0}"


@pytest.mark.parametrize("seconds,expected", [(-5, 0.0), (float("nan"), 0.0), (float("inf"), 365 * 24 * 3600.0),
                                              (30, 30.0)])
def test_retry_later_delay_is_always_a_storable_interval(seconds, expected):
    assert RetryLater(seconds).seconds == expected and math.isfinite(RetryLater(seconds).seconds)


def test_finish_sends_the_arrays_array_literal_makes(engine):
    """finish() builds its columns itself (one literal for a column one value fills): the same text as
    array_literal of each column, for a batch of one value per column and for a mixed one."""
    from sqlalchemy import event

    from jobprocessor import queries

    sent = []

    def record(conn, cursor, statement, parameters, *_):
        sent.append(parameters)

    event.listen(engine, "before_cursor_execute", record)
    try:
        uniform = [queries.Outcome(i, "completed", result_json="null") for i in (11, 12, 13)]
        mixed = [queries.Outcome(21, "completed", result_json='{"a": "\\"q\\""}'),
                 queries.Outcome(22, "pending", error="boom", delay_s=5, traceback="tb"),
                 queries.Outcome(23, "pending", delay_s=None, give_back_attempt=True, deferred=True),
                 queries.Outcome(24, "failed", error='say "no"', delay_s=0.5)]
        with engine.begin() as conn:
            for batch in (uniform, mixed, uniform[:1]):
                queries.finish(conn, "w", batch)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    for params, batch in zip(sent, (uniform, mixed, uniform[:1])):
        if batch is not mixed:  # every outcome a success: the statement for those, with the ids and the results
            assert set(params) == {"worker", "ids", "results"}
            assert (params["ids"], params["results"]) == (array_literal([o.job_id for o in batch]),
                                                          array_literal([o.result_json for o in batch]))
            continue
        expected = {"ids": [o.job_id for o in batch], "statuses": [o.status for o in batch],
                    "results": [o.result_json for o in batch], "errors": [o.error for o in batch],
                    "delays": [None if o.delay_s is None else float(o.delay_s) for o in batch],
                    "give_backs": [1 if o.give_back_attempt else 0 for o in batch],
                    "deferred": [1 if o.deferred else 0 for o in batch], "tracebacks": [o.traceback for o in batch]}
        assert {name: params[name] for name in expected} == {n: array_literal(v) for n, v in expected.items()}


def test_a_batch_of_successes_is_written_as_finish_writes_it(clean_db):
    """Every outcome of a batch a success: finish() sends the statement for those (FINISH_COMPLETED), which must
    leave each row as FINISH does -- here with what earlier attempts left (an error, its traceback, deferrals), a
    result of each kind, and a job another caller holds now (not written by either)."""
    from jobprocessor import queries

    columns = [c for c in queries.JOB_COLUMNS + queries.DETAIL_COLUMNS if c != "id"]
    results = ['{"a": [1, "\\"q\\""]}', "null", None, '"text"']
    with clean_db.begin() as conn:
        ids = conn.execute(text("""
            INSERT INTO jobs (type, status, attempts, locked_by, locked_until, started_at, last_error, last_traceback,
                              deferrals, deferred_since, store_id)
            SELECT 'test.echo', 'running', 2, CASE WHEN h % 5 = 0 THEN 'other' ELSE 'w' END,
                   now() + interval '1 minute', now() - interval '1 second', CASE WHEN h % 2 = 0 THEN 'earlier' END,
                   CASE WHEN h % 2 = 0 THEN 'tb' END, h % 3, CASE WHEN h % 3 > 0 THEN now() - interval '1 hour' END,
                   'store-' || h
            FROM generate_series(1, 20) g, LATERAL (SELECT g % 10 AS h) AS x  -- the two halves alike
            ORDER BY g RETURNING id""")).scalars().all()
        batches = {}
        for half, statement in ((ids[:10], queries.FINISH_COMPLETED), (ids[10:], queries.FINISH)):
            batches[statement] = [queries.Outcome(job_id, "completed", result_json=results[i % 4])
                                  for i, job_id in enumerate(half)]
        sent = []
        original = conn.execute

        def execute(statement, *args, **kwargs):
            sent.append(str(statement))
            return original(statement, *args, **kwargs)

        conn.execute = execute
        written = queries.finish(conn, "w", batches[queries.FINISH_COMPLETED])
        conn.execute = original
        assert sent == [queries.FINISH_COMPLETED]
        # the other half through FINISH itself, as a batch with one outcome that is not a success would send it
        general = dict(worker="w", ids=array_literal(ids[10:]), statuses=array_literal(["completed"] * 10),
                       results=array_literal([o.result_json for o in batches[queries.FINISH]]),
                       errors=array_literal([None] * 10), delays=array_literal([0.0] * 10),
                       give_backs=array_literal([0] * 10), deferred=array_literal([0] * 10),
                       tracebacks=array_literal([None] * 10))
        written |= set(conn.execute(text(queries.FINISH), general).scalars())
        rows = conn.execute(text(f"SELECT id, {', '.join(columns)} FROM jobs ORDER BY id")).all()
    assert written == {job_id for job_id in ids if (ids.index(job_id) + 1) % 5 != 0}
    fast, slow = rows[:10], rows[10:]
    assert [row[1:] for row in fast] == [row[1:] for row in slow]
    assert {row.status for row in fast} == {"completed", "running"}


def test_a_success_that_carries_more_than_a_result_goes_through_finish(clean_db):
    """FINISH_COMPLETED writes only what a plain success changes: a completed outcome that also carries an error,
    gives its attempt back or is a deferral (the executor makes none today) must still be written in full by FINISH."""
    from jobprocessor import queries

    with clean_db.begin() as conn:
        ids = conn.execute(text("""
            INSERT INTO jobs (type, status, attempts, locked_by, locked_until, started_at)
            SELECT 'test.echo', 'running', 2, 'w', now() + interval '1 minute', now()
            FROM generate_series(1, 4) ORDER BY 1 RETURNING id""")).scalars().all()
        unusual = {ids[1]: dict(error="noted"), ids[2]: dict(give_back_attempt=True), ids[3]: dict(deferred=True)}
        for job_id, extra in unusual.items():
            batch = [queries.Outcome(ids[0], "completed", result_json="null"),
                     queries.Outcome(job_id, "completed", result_json="null", **extra)]
            assert queries.finish(conn, "w", batch) == {ids[0], job_id}
            conn.execute(text("UPDATE jobs SET status = 'running', locked_by = 'w' WHERE id = :id"), {"id": ids[0]})
        rows = {row.id: row for row in conn.execute(text(
            "SELECT id, status, last_error, attempts, deferrals FROM jobs WHERE id = ANY(:ids)"), {"ids": ids[1:]})}
    assert rows[ids[1]].last_error == "noted"
    assert rows[ids[2]].attempts == 1
    assert rows[ids[3]].deferrals == 1
    assert {row.status for row in rows.values()} == {"completed"}
