"""Where the schema lives: `sql/` (the DBA scripts) and `migrations/` (the Alembic revisions that run them).

In a source checkout (and an editable install) they are the folders at the top of the repository; a regular
`pip install .` ships them inside the package as jobprocessor/sql and jobprocessor/migrations (setup.py), so
`flask db upgrade` works from any installed copy.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


SQL_DIR = shipped_dir("sql")
MIGRATIONS_DIR = shipped_dir("migrations")
