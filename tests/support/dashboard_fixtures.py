"""Shared by the dashboard's tests: settings with its secrets, signing in through the real form
(the fixtures are in tests/dashboard/conftest.py)."""
from __future__ import annotations

import re

OPERATOR_SECRET = "operator-secret-0123456789abc"
READONLY_SECRET = "readonly-secret-0123456789abc"
SESSION_KEY = "session-signing-key-0123456789abcdefghij"
DASHBOARD_SETTINGS = dict(DASHBOARD_SECRET=OPERATOR_SECRET, DASHBOARD_READONLY_SECRET=READONLY_SECRET,
                          DASHBOARD_SESSION_KEY=SESSION_KEY)
TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    return TOKEN.search(html).group(1)


def sign_in(client, secret: str, next_path: str = "/dashboard/"):
    form = client.get("/dashboard/signin")
    return client.post("/dashboard/signin", data={"secret": secret, "csrf_token": csrf_of(form.get_data(as_text=True)),
                                                  "next": next_path})


def page_token(client, path: str = "/dashboard/jobs") -> str:
    """The session's CSRF token, as a page carries it."""
    return csrf_of(client.get(path).get_data(as_text=True))
