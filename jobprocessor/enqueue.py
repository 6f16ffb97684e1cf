"""Enqueueing jobs: validation shared by the HTTP API and the Python API, and `enqueue()` / `enqueue_many()`.

    from jobprocessor.enqueue import enqueue
    job_id = enqueue("inventory.sync", {"sku": "A-1"}, store_id="store-42", priority="high")

Pass `connection=` to enqueue inside your own transaction (the job exists only if your transaction commits).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

from flask import current_app

from . import queries
from .config import Settings
from .handlers import PermanentError, get_handler
from .jsontext import has_nul

PRIORITY_NAMES = {"urgent": 1, "high": 2, "normal": 5, "low": 10}
MAX_JOBS_PER_REQUEST = 1000
MAX_IDENTIFIER_LENGTH = 200
MAX_SHOWN_NAME = 64  # an unknown field's name is echoed back at most this long
FIELDS = ("type", "payload", "priority", "run_at", "store_id", "user_id", "max_attempts", "idempotency_key",
          "batch_id")


class InvalidJob(ValueError):
    """A job that cannot be enqueued. `field` names the culprit; status is the HTTP status it maps to."""

    def __init__(self, field: str, message: str, status: int = 400, index: Optional[int] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.field, self.message, self.status, self.index, self.code = field, message, status, index, code


def _identifier(data: Mapping, field: str) -> Optional[str]:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTIFIER_LENGTH or "\x00" in value:
        raise InvalidJob(field, f"{field} must be a non-empty string of at most {MAX_IDENTIFIER_LENGTH} characters")
    if not _is_utf8(value):
        raise InvalidJob(field, f"{field} must be valid Unicode text (it holds a lone surrogate such as \\ud800)")
    return value


def _is_utf8(text: str) -> bool:
    """JSON may escape a lone surrogate ("\\ud800"); Python keeps it, PostgreSQL refuses it (a 500 if not caught)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _priority(value: Any) -> int:
    if value is None:
        return PRIORITY_NAMES["normal"]
    if isinstance(value, str) and value.lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10:
        return value
    raise InvalidJob("priority", "priority must be urgent, high, normal, low or a whole number from 1 to 10")


def _run_at(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidJob("run_at", "run_at must be an ISO 8601 date-time, e.g. 2026-01-31T09:30:00Z") from None
    if not isinstance(value, datetime):
        raise InvalidJob("run_at", "run_at must be an ISO 8601 date-time, e.g. 2026-01-31T09:30:00Z")
    if value.tzinfo is None:  # a time without an offset is taken as UTC
        value = value.replace(tzinfo=timezone.utc)
    try:
        # as UTC: Python accepts offsets up to 24 h, PostgreSQL only up to 15:59 (a 500 for "+21:35" otherwise)
        value = value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:30:00-05:00 is past year 9999 in UTC
        raise InvalidJob("run_at", "run_at must be between the years 1970 and 9999") from None
    if not 1970 <= value.year <= 9999:
        raise InvalidJob("run_at", "run_at must be between the years 1970 and 9999")
    return value.isoformat()


def _max_attempts(value: Any, job_type: str, settings: Settings) -> int:
    if value is None:
        spec = get_handler(job_type)
        return (spec.max_attempts if spec and spec.max_attempts else None) or settings.JOBS_DEFAULT_MAX_ATTEMPTS
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100:
        return value
    raise InvalidJob("max_attempts", "max_attempts must be a whole number from 1 to 100")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative, so a hostile payload cannot blow the Python stack while being measured."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _payload(value: Any, settings: Settings) -> str:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidJob("payload", "payload must be a JSON object")
    if _depth_exceeds(value, settings.MAX_PAYLOAD_DEPTH):
        raise InvalidJob("payload", f"payload is nested deeper than {settings.MAX_PAYLOAD_DEPTH} levels")
    try:
        document = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidJob("payload", f"payload is not valid JSON data ({exc})") from None
    if len(document.encode()) > settings.MAX_PAYLOAD_BYTES:
        raise InvalidJob("payload", f"payload is larger than {settings.MAX_PAYLOAD_BYTES} bytes")
    if has_nul(document):  # PostgreSQL's jsonb cannot store the NUL character
        raise InvalidJob("payload", "payload must not contain the NUL character (\\u0000)")
    if "\\ud" in document and not _is_utf8(json.dumps(value, ensure_ascii=False)):
        raise InvalidJob("payload", "payload must be valid Unicode text (it holds a lone surrogate such as \\ud800)")
    return document


def validate_job(data: Any, settings: Settings) -> dict:
    """One job as the API or a caller gives it -> a row for queries.enqueue. Raises InvalidJob."""
    if not isinstance(data, Mapping):
        raise InvalidJob("job", "each job must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        name = str(unknown[0])
        shown = name if len(name) <= MAX_SHOWN_NAME else name[:MAX_SHOWN_NAME] + "..."  # never echo 100 KB back
        raise InvalidJob(shown, f"unknown field {shown!r}; allowed: {', '.join(FIELDS)}")
    job_type = data.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise InvalidJob("type", "type is required and must be a string")
    if get_handler(job_type) is None:
        raise InvalidJob("type", f"unknown job type {job_type[:MAX_IDENTIFIER_LENGTH]!r}: no handler is registered "
                                 "for it", status=422)
    row = {
        "type": job_type,
        "priority": _priority(data.get("priority")),
        "run_at": _run_at(data.get("run_at")),
        "max_attempts": _max_attempts(data.get("max_attempts"), job_type, settings),
    }
    for field in ("store_id", "user_id", "idempotency_key", "batch_id"):
        row[field] = _identifier(data, field)
    row["payload"] = json.loads(_payload(data.get("payload"), settings))
    validate_payload = get_handler(job_type).validate_payload
    if validate_payload is not None:
        try:
            validate_payload(row["payload"])
        except PermanentError as exc:
            raise InvalidJob("payload", f"invalid payload for {job_type}: {exc}", status=422,
                             code="invalid_payload") from None
    return row


def validate_jobs(items: Sequence[Any], settings: Settings) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise InvalidJob("jobs", "jobs must be a non-empty array")
    if len(items) > MAX_JOBS_PER_REQUEST:
        raise InvalidJob("jobs", f"at most {MAX_JOBS_PER_REQUEST} jobs per request")
    rows = []
    for index, item in enumerate(items):
        try:
            rows.append(validate_job(item, settings))
        except InvalidJob as exc:
            raise InvalidJob(f"jobs[{index}].{exc.field}", f"jobs[{index}]: {exc.message}", exc.status, index,
                             exc.code) from None
    return rows


def _settings() -> Settings:
    return current_app.extensions["jobprocessor"].settings


def enqueue_many(jobs: Sequence[Mapping], *, connection=None) -> list[tuple[int, bool]]:
    """Enqueue up to 1000 jobs in one INSERT; returns (id, created) per job (created False: idempotent repeat)."""
    rows = validate_jobs(list(jobs), _settings())
    if connection is not None:
        return queries.enqueue(connection, rows)
    from .extensions import db

    with db.engine.begin() as conn:
        return queries.enqueue(conn, rows)


def enqueue(job_type: str, payload: Optional[Mapping] = None, *, connection=None, **fields: Any) -> int:
    """Enqueue one job; returns its id (the existing job's id when `idempotency_key` was seen before)."""
    (job_id, _created), = enqueue_many([dict(fields, type=job_type, payload=payload)], connection=connection)
    return job_id

