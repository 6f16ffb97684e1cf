"""Enqueueing jobs: validation shared by the HTTP API and the Python API, and `enqueue()` / `enqueue_many()`.

    from jobprocessor.enqueue import enqueue
    job_id = enqueue("inventory.sync", {"sku": "A-1"}, store_id="store-42", priority="high")

Pass `connection=` to enqueue inside your own transaction (the job exists only if your transaction commits).

Workflow fields (README, "Workflows"): `depends_on` (existing job ids, or {"index": i} for an earlier job of the same
request), `depends_on_batch`, `on_parent_failure` ("cancel" or "run"), `singleton_key`, `debounce_s`; a request of
several jobs may also carry `on_complete` (a job enqueued once when the batch has no job left that can run).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

from flask import current_app

from . import queries
from .config import Settings
from .handler_registry import get_handler
from .job import InvalidJob, PermanentError
from .jsontext import has_nul
from .workflows import plan as workflow_plan
from .workflows.plan import Links

PRIORITY_NAMES = {"urgent": 1, "high": 2, "normal": 5, "low": 10}
MAX_JOBS_PER_REQUEST = 1000
MAX_IDENTIFIER_LENGTH = 200
MAX_SHOWN_NAME = 64  # an unknown field's name is echoed back at most this long
MAX_JOB_ID = 2**63 - 1
FIELDS = ("type", "payload", "priority", "run_at", "store_id", "user_id", "max_attempts", "idempotency_key",
          "batch_id", "depends_on", "depends_on_batch", "on_parent_failure", "singleton_key", "debounce_s")
WORKFLOW_FIELDS = FIELDS[9:]
# what an on_complete job may carry: a plain job (it is the batch's child, in no batch itself)
CALLBACK_FIELDS = FIELDS[:8]


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


def _combination(field: str, message: str) -> InvalidJob:
    """Fields that are each valid but do not go together (a 422: JSON Schema cannot state such rules)."""
    return InvalidJob(field, message, status=422, code="invalid_combination")


def _depends_on(value: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """-> (existing job ids, positions in the request)."""
    if not isinstance(value, list) or len(value) > workflow_plan.MAX_PARENTS:
        raise InvalidJob("depends_on", f"depends_on must be an array of at most {workflow_plan.MAX_PARENTS} job ids "
                                       "or {\"index\": i} references")
    ids, positions = set(), set()
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= MAX_JOB_ID:
            ids.add(item)
        elif (isinstance(item, Mapping) and set(item) == {"index"} and isinstance(item["index"], int)
              and not isinstance(item["index"], bool) and 0 <= item["index"] < MAX_JOBS_PER_REQUEST):
            positions.add(item["index"])
        else:
            raise InvalidJob("depends_on", "each depends_on entry must be a job id (a whole number from 1) or "
                                           f"{{\"index\": i}} (0 to {MAX_JOBS_PER_REQUEST - 1}): an earlier job of the "
                                           "same request")
    return tuple(sorted(ids)), tuple(sorted(positions))


def _debounce_s(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= workflow_plan.MAX_DEBOUNCE_S:
        raise InvalidJob("debounce_s", f"debounce_s must be a number of seconds from 0 to "
                                       f"{workflow_plan.MAX_DEBOUNCE_S:g}")
    return float(value)


def _links(data: Mapping) -> Optional[Links]:
    """The workflow fields of one job (None: it has none)."""
    if not any(data.get(name) is not None for name in WORKFLOW_FIELDS):
        return None
    parent_ids, positions = _depends_on(data["depends_on"]) if data.get("depends_on") is not None else ((), ())
    batch = _identifier(data, "depends_on_batch")
    policy = data.get("on_parent_failure")
    if policy is not None and policy not in workflow_plan.POLICIES:
        raise InvalidJob("on_parent_failure", "on_parent_failure must be \"cancel\" (the default) or \"run\"")
    links = Links(parent_ids, positions, batch, singleton_key=_identifier(data, "singleton_key"),
                  debounce_s=_debounce_s(data.get("debounce_s")))
    if links.has_parents:
        links = Links(parent_ids, positions, batch, policy or "cancel", links.singleton_key, links.debounce_s)
    elif policy is not None:
        raise _combination("on_parent_failure", "on_parent_failure needs depends_on or depends_on_batch")
    if links.debounce_s is not None:
        if links.singleton_key is None:
            raise _combination("debounce_s", "debounce_s needs a singleton_key: the key names the job a burst "
                                             "collapses into")
        if data.get("run_at") is not None:
            raise _combination("debounce_s", "give run_at or debounce_s, not both: debounce_s sets run_at to now "
                                             "plus debounce_s")
        if links.has_parents:
            raise _combination("debounce_s", "a debounced job cannot wait for parents (depends_on, depends_on_batch)")
    return links


def validate_job(data: Any, settings: Settings, *, allowed: Sequence[str] = FIELDS) -> dict:
    """One job as the API or a caller gives it -> a row for queries.enqueue. Raises InvalidJob."""
    if not isinstance(data, Mapping):
        raise InvalidJob("job", "each job must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        name = str(unknown[0])
        shown = name if len(name) <= MAX_SHOWN_NAME else name[:MAX_SHOWN_NAME] + "..."  # never echo 100 KB back
        raise InvalidJob(shown, f"unknown field {shown!r}; allowed: {', '.join(allowed)}")
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
    links = _links(data)
    if links is not None:
        row["links"] = links
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


def validate_callback(data: Any, settings: Settings) -> dict:
    """A batch's on_complete job: a plain job (no batch, no parents of its own, no key)."""
    if isinstance(data, Mapping):
        extra = sorted(set(data) & (set(FIELDS) - set(CALLBACK_FIELDS)))
        if extra:
            raise _combination(f"on_complete.{extra[0]}", f"on_complete cannot carry {extra[0]}: it waits for its "
                                                          "batch, in no batch itself")
    try:
        return validate_job(data, settings, allowed=CALLBACK_FIELDS)
    except InvalidJob as exc:
        raise InvalidJob(f"on_complete.{exc.field}", f"on_complete: {exc.message}", exc.status, None,
                         exc.code) from None


def plan(rows: Sequence[dict], callback: Optional[dict] = None) -> Optional[workflow_plan.Plan]:
    """The request's workflow plan (None: no job uses a workflow field, the plain INSERT does). Raises InvalidJob."""
    if callback is None and not any("links" in row for row in rows):
        return None
    try:
        return workflow_plan.build(rows, callback)
    except workflow_plan.PlanError as exc:
        field = exc.field if exc.index is None else f"jobs[{exc.index}].{exc.field}"
        raise InvalidJob(field, exc.message, exc.status, exc.index, exc.code) from None


def write(conn, rows: Sequence[dict], callback: Optional[dict] = None):
    """Insert validated rows (and a batch's on_complete row) in the caller's transaction -> workflows.write.Written:
    per row (id, created), the debounced ones, the callback's (id, created). Rows without workflow fields take the
    plain INSERT (queries.enqueue, one statement)."""
    from .workflows import write as workflow_write

    request_plan = plan(rows, callback)
    if request_plan is None:
        return workflow_write.Written(queries.enqueue(conn, rows))
    return workflow_write.enqueue(conn, rows, request_plan, callback)


def _settings() -> Settings:
    return current_app.extensions["jobprocessor"].settings


def enqueue_many(jobs: Sequence[Mapping], *, connection=None, on_complete: Optional[Mapping] = None
                 ) -> list[tuple[int, bool]]:
    """Enqueue up to 1000 jobs in one transaction; returns (id, created) per job (created False: an idempotent
    repeat, an existing singleton, or a debounced job that absorbed this one). `on_complete`: a job enqueued once
    when the batch of `jobs` (one batch_id) has no job left that can run; its id is then
    `enqueue_batch(...).on_complete`."""
    return enqueue_batch(jobs, connection=connection, on_complete=on_complete).jobs


def enqueue_batch(jobs: Sequence[Mapping], *, connection=None, on_complete: Optional[Mapping] = None):
    """As enqueue_many, returning the whole workflows.write.Written (debounced jobs, the callback's id)."""
    settings = _settings()
    rows = validate_jobs(list(jobs), settings)
    callback = validate_callback(on_complete, settings) if on_complete is not None else None
    if connection is not None:
        return write(connection, rows, callback)
    from .extensions import db
    from .workflows.write import with_retry

    return with_retry(db.engine, lambda conn: write(conn, rows, callback))


def enqueue(job_type: str, payload: Optional[Mapping] = None, *, connection=None, **fields: Any) -> int:
    """Enqueue one job; returns its id (the existing job's id when `idempotency_key` was seen before, or when
    `singleton_key` names a job that has not finished)."""
    (job_id, _created), = enqueue_many([dict(fields, type=job_type, payload=payload)], connection=connection)
    return job_id

