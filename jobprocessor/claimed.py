"""The rows a claim returns (queries.claim): light tuples read straight off the cursor, one per claimed job.

A call reads up to a thousand of them per round and looks at a dozen columns of each, so they are tuples with
named fields (`row.id`, `row.type`), not SQLAlchemy mappings (measured: 5.7 against 3.3 us a row to read). They
also answer `row["id"]`, `row.get()`, `keys()` and `dict(row)`, as the mappings did.

`payload` (jsonb) arrives as its JSON text (`row.payload_json`) and is decoded when read (`row.payload`; a job's
`Job.payload`): psycopg2's decoding of every payload as the claim was read was half of the reading, and a handler
that never looks at its payload needs none of it.
"""
from __future__ import annotations

import json
from collections import namedtuple
from typing import Any

import psycopg2.extensions

JSONB_OID = 3802
# psycopg2's text typecaster under another name: the claim's jsonb values as the text PostgreSQL sent
_JSONB_AS_TEXT = psycopg2.extensions.new_type((JSONB_OID,), "JSONB_AS_TEXT", psycopg2.extensions.UNICODE)

# columns kept as text and decoded when read: column -> the field holding the text
LAZY_JSON = {"payload": "payload_json"}


class jsonb_as_text:
    """While open, statements executed on this psycopg2 connection return jsonb columns as text. psycopg2 picks
    each column's typecaster when the statement executes, so this surrounds the execute only (the fetch after it
    keeps the text); the connection's own typecasters are as they were afterwards."""

    def __init__(self, dbapi_connection):
        self.conn = dbapi_connection

    def __enter__(self) -> None:
        self.previous = self.conn.string_types.get(JSONB_OID)
        psycopg2.extensions.register_type(_JSONB_AS_TEXT, self.conn)

    def __exit__(self, *exc) -> None:
        if self.previous is None:
            self.conn.string_types.pop(JSONB_OID, None)
        else:
            psycopg2.extensions.register_type(self.previous, self.conn)


def decode_json(document: Any) -> Any:
    """What psycopg2 would have made of a jsonb value (json.loads; SQL NULL stays None)."""
    return None if document is None else json.loads(document)


def _getitem(self, key):
    if isinstance(key, str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None
    return tuple.__getitem__(self, key)


def _get(self, key, default=None):
    try:
        return _getitem(self, key)
    except KeyError:
        return default


def _row_class(columns: tuple[str, ...]) -> type:
    fields = [LAZY_JSON.get(c, c) for c in columns]
    base = namedtuple("ClaimedRow", fields)
    namespace: dict[str, Any] = {"__slots__": (), "__getitem__": _getitem, "get": _get,
                                 "keys": lambda self: columns, "__doc__": "One claimed job (jobprocessor/claimed.py)."}
    for column, field in LAZY_JSON.items():
        if column in columns:
            index = base._fields.index(field)
            namespace[column] = property(lambda self, _i=index: decode_json(tuple.__getitem__(self, _i)))
    return type("ClaimedRow", (base,), namespace)


_classes: dict[tuple[str, ...], type] = {}


def row_class(columns) -> type:
    """The row type for a statement's columns (made once per distinct column list)."""
    columns = tuple(columns)
    cls = _classes.get(columns)
    if cls is None:
        cls = _classes[columns] = _row_class(columns)
    return cls


def rows(cursor) -> list:
    """Every row left on a psycopg2 cursor, as claimed rows."""
    cls = row_class(d[0] for d in cursor.description)
    new = tuple.__new__
    return [new(cls, values) for values in cursor.fetchall()]
