"""gunicorn's own error answers (a request it refuses before the app sees it: a malformed request line, a line
past limit_request_line, too many header fields, a bad chunk size) as JSON like every other error,
{"error": code, "message": sentence}, instead of its HTML page. gunicorn.conf.py installs it in the master, so
every worker forked from it answers so.

gunicorn writes those answers through gunicorn.util.write_error(sock, status, reason, message) (workers/base.py,
handle_error); this replaces that one function, keeping its signature and its Connection: close.
"""
from __future__ import annotations

import json

MAX_DETAIL = 200  # gunicorn's detail may quote part of the request: a little of it, never a whole header


def write_json_error(sock, status_int, reason, mesg) -> None:
    from gunicorn import util

    detail = " ".join(str(mesg or "").split())
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "..."
    message = f"{reason}: {detail}." if detail else f"{reason}."
    body = json.dumps({"error": str(reason).lower().replace(" ", "_"), "message": message}).encode("ascii")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    from gunicorn import util

    util.write_error = write_json_error
