"""Reading request input strictly: a bad value is a 400 naming the parameter, never a silent default."""
from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import ApiError



def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def raw_body() -> bytes:
    """The request's body as sent (read once, kept for later readers), 413 above MAX_REQUEST_BYTES."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # a chunked body (no Content-Length): werkzeug stops reading at the limit without a word and hands over
        # the truncated start; a body that reaches the limit is too large, as it is with a Content-Length
        raise RequestEntityTooLarge()
    return raw


def json_body(required: bool) -> Any:
    """The request's JSON body. Empty body: None (or 400 if required). Wrong type, bad UTF-8, bad JSON: 4xx."""
    raw = raw_body()
    if not raw.strip():
        if required:
            raise ApiError(400, "missing_body", "The request needs a JSON body.")
        return None
    if not request.mimetype == "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The request body is not valid UTF-8.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_json", "The JSON body is nested too deeply.") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None


def _source(body: Any) -> dict:
    return body if isinstance(body, dict) else {}


def get_param(name: str, body: Any = None) -> Any:
    """A parameter from the query string, else from the JSON body."""
    if name in request.args:
        return request.args.get(name)
    return _source(body).get(name)


# ASCII digits only: str.isdigit() also accepts "²" or "①", which int() then refuses (a 500); and no more
# digits than any bound here needs, so int() never meets Python's 4300-digit conversion limit
_INTEGER = re.compile(r"[+-]?[0-9]{1,40}")


def int_param(name: str, value: Any, lo: int, hi: int, default: Optional[int] = None) -> Optional[int]:
    if value is None or value == "":
        return default
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number from {lo} to {hi}.")
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number from {lo} to {hi}, got {value}.")
    return value


def number_param(name: str, value: Any, lo: float, hi: float, default: Optional[float] = None) -> Optional[float]:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"{name} must be a number from {lo:g} to {hi:g}.") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ApiError(400, "invalid_parameter", f"{name} must be a number from {lo:g} to {hi:g}.")
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number from {lo:g} to {hi:g}, got {value:g}.")
    return float(value)


def str_param(name: str, value: Any, max_length: int = 200) -> Optional[str]:
    if value is None or value == "":  # `?type=` means no filter, as `?limit=` means the default
        return None
    if not isinstance(value, str) or not value or len(value) > max_length or "\x00" in value:
        raise ApiError(400, "invalid_parameter", f"{name} must be a non-empty string of at most {max_length} "
                                                 "characters.")
    return value


def choice_param(name: str, value: Any, choices: tuple[str, ...]) -> Optional[str]:
    if value is None or value == "":
        return None
    if value not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}.")
    return value
