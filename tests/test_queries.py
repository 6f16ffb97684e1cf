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
        expected = {"ids": [o.job_id for o in batch], "statuses": [o.status for o in batch],
                    "results": [o.result_json for o in batch], "errors": [o.error for o in batch],
                    "delays": [None if o.delay_s is None else float(o.delay_s) for o in batch],
                    "give_backs": [1 if o.give_back_attempt else 0 for o in batch],
                    "deferred": [1 if o.deferred else 0 for o in batch], "tracebacks": [o.traceback for o in batch]}
        assert {name: params[name] for name in expected} == {n: array_literal(v) for n, v in expected.items()}
