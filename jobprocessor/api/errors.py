"""Every error the API gives is JSON: {"error": "<code>", "message": "<one clear sentence>"}."""
from __future__ import annotations

import json
import logging
import traceback

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from ..job import InvalidJob

log = logging.getLogger("jobprocessor.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.field = field


def error_response(status: int, code: str, message: str, headers: dict | None = None, field: str | None = None):
    response = jsonify(error=code, message=message, **({"field": field} if field is not None else {}))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _is_unavailable(exc: SQLAlchemyError) -> bool:
    """Connection-level failures (server down, restarted, connection killed, pool exhausted) -> 503."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        import psycopg2

        orig = exc.orig
        if isinstance(orig, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
        # admin shutdown / crash / cannot connect now (class 57P, 08)
        code = getattr(orig, "pgcode", None) or ""
        return code.startswith(("57P", "08"))
    return False


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.field)

    @app.errorhandler(InvalidJob)
    def _invalid_job(exc: InvalidJob):
        code = exc.code or ("unknown_type" if exc.status == 422 else "invalid_field")
        payload = {"error": code, "message": exc.message, "field": exc.field}
        if exc.index is not None:
            payload["index"] = exc.index
        response = jsonify(payload)
        response.status_code = exc.status
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        limit = app.extensions["jobprocessor"].settings.MAX_REQUEST_BYTES
        messages = {
            404: "No such endpoint or resource.",
            405: "This endpoint does not accept that method.",
            413: f"The request body is larger than {limit} bytes.",
        }
        # the exception's own headers (405: Allow, the methods the endpoint takes), not its HTML's content type
        headers = {name: value for name, value in exc.get_headers()
                   if name.lower() not in ("content-type", "content-length")}
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            messages[405] = f"This endpoint does not accept that method; it takes {', '.join(exc.valid_methods)}."
        return error_response(exc.code or 500, code, messages.get(exc.code, exc.description or exc.name), headers)

    @app.errorhandler(SQLAlchemyError)
    def _database_error(exc: SQLAlchemyError):
        if _is_unavailable(exc):
            log.warning("database unavailable: %s", type(exc.orig if hasattr(exc, "orig") else exc).__name__)
            return error_response(503, "database_unavailable",
                                  "The database is unreachable right now; nothing was changed, try again shortly.",
                                  {"Retry-After": "5"})
        # the error's class, code and statement, never its message: PostgreSQL's messages quote the values
        # (payloads, results) they refused, and the engine hides the bound parameters (hide_parameters)
        orig = getattr(exc, "orig", None)
        log.error(json.dumps({"event": "database_error", "error": type(orig or exc).__name__,
                              "pgcode": getattr(orig, "pgcode", None),
                              "statement": " ".join(str(getattr(exc, "statement", "") or "").split())[:300],
                              "at": [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)
                                     if "/jobprocessor/" in f.filename][-3:]}))
        return error_response(500, "database_error", "The database rejected the request.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")
