"""What a bulk action applies to: the request `{"action", "filter", "dry_run"}` of POST /jobs/bulk (also the CLI's
and the dashboard's), validated into a BulkFilter. Pure: no database here.

An action applies only to jobs in the statuses it can change (retry: failed or cancelled; cancel: pending); a
filter's `status` narrows that, and a status the action cannot change is a 400, not a silent no-op.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

ACTIONS: dict[str, tuple[str, ...]] = {"retry": ("failed", "cancelled"), "cancel": ("pending",)}
TEXT_FIELDS = ("type", "store_id", "batch_id", "error_contains", "error_group")
TIME_FIELDS = ("created_after", "created_before")
FILTER_FIELDS = ("status",) + TEXT_FIELDS + TIME_FIELDS
MAX_TEXT = 200
# a normalised error is at most this long (see normalise_error): the Failed page's groups
MAX_GROUP = 200


class BulkError(ValueError):
    """A bulk request that cannot be run; `field` names the culprit (a 400)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class BulkFilter:
    """The jobs an action applies to. `statuses` is never empty: the action's own, narrowed by the filter."""

    statuses: tuple[str, ...]
    type: Optional[str] = None
    store_id: Optional[str] = None
    batch_id: Optional[str] = None
    error_contains: Optional[str] = None
    error_group: Optional[str] = None  # a normalised error, as the Failed page groups them (normalise_error)
    created_after: Optional[datetime] = None
    created_before: Optional[datetime] = None

    def as_dict(self) -> dict:
        """JSON for the action log and the answers: the fields that are set."""
        out: dict[str, Any] = {"status": list(self.statuses)}
        for name in TEXT_FIELDS + TIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out

    def params(self) -> dict:
        """The bound parameters of jobprocessor/bulk/actions.py's statements."""
        return {"statuses": "{" + ",".join(self.statuses) + "}", "job_type": self.type, "store_id": self.store_id,
                "batch_id": self.batch_id, "error_like": None if self.error_contains is None
                else "%" + like_escape(self.error_contains) + "%", "error_group": self.error_group,
                "created_after": self.created_after, "created_before": self.created_before}


@dataclass(frozen=True)
class BulkRequest:
    action: str
    filter: BulkFilter
    dry_run: bool


def like_escape(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (backslash is PostgreSQL's default LIKE escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_NUMBERS = re.compile(r"\d+")
_HEX = re.compile(r"\b[0-9a-f]{8,}\b", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def normalise_error(message: Optional[str]) -> str:
    """The group an error belongs to on the Failed page: its first line, quoted values, long hex words and
    numbers replaced, cut to MAX_GROUP characters. The SQL twin is GROUP_OF in actions.py (a test compares them)."""
    if not message:
        return ""
    first = message.strip().split("\n", 1)[0]
    first = _QUOTED.sub("'…'", first)
    first = _HEX.sub("#", first)
    first = _NUMBERS.sub("N", first)
    return first[:MAX_GROUP]


def _text(name: str, value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise BulkError(name, f"filter.{name} must be a string of at most {MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BulkError(name, f"filter.{name} must be valid Unicode text") from None
    return value


def parse_time(name: str, value: Any) -> Optional[datetime]:
    if value is None or value == "":
        return None
    example = "an ISO 8601 date-time, e.g. 2026-01-31T09:30:00Z"
    if not isinstance(value, str):
        raise BulkError(name, f"filter.{name} must be {example}")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BulkError(name, f"filter.{name} must be {example}") from None
    if moment.tzinfo is None:  # no offset: UTC
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise BulkError(name, f"filter.{name} must be {example}") from None
    if not 1970 <= moment.year <= 9999:
        raise BulkError(name, f"filter.{name} must be between the years 1970 and 9999")
    return moment


def parse_filter(action: str, raw: Any) -> BulkFilter:
    if action not in ACTIONS:
        raise BulkError("action", f"action must be one of {', '.join(ACTIONS)}")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise BulkError("filter", "filter must be an object")
    unknown = sorted(set(raw) - set(FILTER_FIELDS))
    if unknown:
        raise BulkError(unknown[0], f"filter.{unknown[0]} is not a filter; use {', '.join(FILTER_FIELDS)}")
    allowed = ACTIONS[action]
    status = raw.get("status")
    if status is None or status == "":
        statuses = allowed
    elif isinstance(status, str) and status in allowed:
        statuses = (status,)
    else:
        raise BulkError("status", f"{action} applies to {' or '.join(allowed)} jobs: filter.status must be "
                                  f"{' or '.join(allowed)} (or left out)")
    values = {name: _text(name, raw.get(name)) for name in TEXT_FIELDS}
    if values["error_group"] is not None and len(values["error_group"]) > MAX_GROUP:
        raise BulkError("error_group", f"filter.error_group is at most {MAX_GROUP} characters")
    times = {name: parse_time(name, raw.get(name)) for name in TIME_FIELDS}  # an empty window matches nothing
    return BulkFilter(statuses=statuses, **values, **times)


def parse_request(body: Any) -> BulkRequest:
    """POST /jobs/bulk's body."""
    if not isinstance(body, Mapping):
        raise BulkError("body", 'The body must be {"action": "retry"|"cancel", "filter": {...}, "dry_run": bool}')
    unknown = sorted(set(body) - {"action", "filter", "dry_run"})
    if unknown:
        raise BulkError(unknown[0], f"{unknown[0]} is not a field; send action, filter and dry_run")
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise BulkError("action", f"action must be one of {', '.join(ACTIONS)}")
    dry_run = body.get("dry_run", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BulkError("dry_run", "dry_run must be true or false")
    return BulkRequest(action, parse_filter(action, body.get("filter")), dry_run)
