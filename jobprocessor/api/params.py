"""Reading request input strictly: a bad value is a 400 naming the parameter, never a silent default."""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, Iterable, Optional

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import ApiError

MAX_SHOWN_NAME = 64  # an unknown name is echoed back at most this long (a 100 KB field name is not)


def shown(name: str) -> str:
    """A caller's name for an error message: quoted, cut to MAX_SHOWN_NAME characters."""
    text = str(name)
    return repr(text if len(text) <= MAX_SHOWN_NAME else text[:MAX_SHOWN_NAME] + "...")


def _refuse_unknown(kind: str, names: Iterable[str], allowed: Iterable[str]) -> None:
    unknown = sorted(names)
    if not unknown:
        return
    allowed = list(allowed)
    known = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
    noun = f"{kind}s" if len(unknown) > 1 else kind
    raise ApiError(400, f"unknown_{kind.replace(' ', '_')}",
                   f"Unknown {noun} {', '.join(shown(n) for n in unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
                   f"; {known}.", field=str(unknown[0])[:MAX_SHOWN_NAME])


def check_body_fields(body: Any, allowed: Iterable[str]) -> None:
    """A JSON object body holds only the `allowed` keys: any other is a 400 naming it."""
    if isinstance(body, dict):
        allowed = tuple(allowed)
        _refuse_unknown("field", set(body) - set(allowed), allowed)


def accepts(query: Iterable[str] = (), body: Optional[Iterable[str]] = None):
    """Declare the query parameters (and, for a view that reads no body itself, the body fields) a view takes:
    anything else is a 400 naming it, so a misspelt `?limt=5` is not silently ignored. Put it under the auth
    decorator: the auth answers first."""
    query = tuple(query)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            _refuse_unknown("query parameter", set(request.args) - set(query), query)
            if body is not None and request.method not in ("GET", "HEAD"):
                fields = tuple(body)
                check_body_fields(object_body("The body, if any, must be a JSON object."), fields)
            return view(*args, **kwargs)

        wrapper.accepted_query = query
        return wrapper

    return decorate


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def raw_body() -> bytes:
    """The request's body as sent (read once, kept for later readers), 413 above MAX_REQUEST_BYTES."""
    raw = request.get_data(cache=True)
    # MAX_CONTENT_LENGTH is MAX_REQUEST_BYTES + 1 (create_app): werkzeug cannot tell a chunked body (no
    # Content-Length) of exactly its limit from a longer one, as it never reads past the limit; with one byte more
    # allowed, a body of exactly MAX_REQUEST_BYTES passes, chunked or not, and one byte over is refused here
    if len(raw) > max_request_bytes():
        raise RequestEntityTooLarge()
    return raw


def max_request_bytes() -> int:
    return current_app.extensions["jobprocessor"].settings.MAX_REQUEST_BYTES


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


def object_body(message: str) -> Optional[dict]:
    """An optional JSON object body: None when the body is empty; any other JSON value (null too) is a 400."""
    body = json_body(required=False)
    if body is None and not raw_body().strip():
        return None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", message)
    return body


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
# The same for decimals: float() also reads "1_0", full-width "１０" and "infinity"; only plain ASCII decimals here
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][+-]?[0-9]{1,4})?")


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
        if not _DECIMAL.fullmatch(value.strip()):
            raise ApiError(400, "invalid_parameter", f"{name} must be a number from {lo:g} to {hi:g}.")
        value = float(value.strip())
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
