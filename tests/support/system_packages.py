"""Debian packages some tests run (nginx, pgbouncer): `.ci/run` installs them. Elsewhere a test that needs one skips
with a message naming the package; under CI (CI=true) a missing one fails instead, so CI can never skip them."""
from __future__ import annotations

import os
import shutil

import pytest

SEARCH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def binary(name: str, package: str) -> str:
    path = shutil.which(name) or next((f"{d}/{name}" for d in SEARCH if os.access(f"{d}/{name}", os.X_OK)), None)
    if path:
        return path
    message = f"needs `{name}` from the Debian package {package!r} (apt-get install {package}; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {message}")
    pytest.skip(message)
