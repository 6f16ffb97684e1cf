"""A job row as the API shows it (`GET /jobs/<id>`, `GET /jobs`, `POST /jobs`; `flask jobs show` prints the same):
queries.JOB_COLUMNS, plus the detail columns the row carries, times in ISO 8601."""
from __future__ import annotations

from typing import Any

from ..queries import DETAIL_COLUMNS, JOB_COLUMNS


def job_to_dict(row: Any) -> dict:
    out = {}
    for column in JOB_COLUMNS + tuple(c for c in DETAIL_COLUMNS if c in row.keys()):
        value = row[column]
        out[column] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
