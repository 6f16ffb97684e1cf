"""Tenant flow control, as data: pauses (pauses.py), per-store limits and weights (limits.py), why a job waits
(wait.py) and which stores wait longest (lag.py). Small functions on a SQLAlchemy Connection, shared by the HTTP
API (api/flow.py), the CLI (`flask jobs pause|resume|pauses|limits|wait`), /metrics and the dashboard. The claim
reads the same tables itself (sql/027_job_flow_control_v1.sql, sql/032_fair_claim_v7.sql)."""
from __future__ import annotations

from ..enqueue import MAX_IDENTIFIER_LENGTH, InvalidJob


class InvalidFlowInput(InvalidJob):
    """A pause or a limit that cannot be stored: `field` names the culprit (a 400 through the API's handler)."""


def optional_name(data: dict, field: str, what: str) -> str | None:
    """A store_id or a type: absent or null, or a non-empty string without NUL of at most MAX_IDENTIFIER_LENGTH."""
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTIFIER_LENGTH or "\x00" in value:
        raise InvalidFlowInput(field, f"{field} must be {what}: a non-empty string of at most "
                                      f"{MAX_IDENTIFIER_LENGTH} characters, or null")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFlowInput(field, f"{field} must be valid Unicode text") from None
    return value


def plain(row) -> dict:
    """A row as JSON-able data (times as ISO 8601)."""
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in dict(row).items()}
