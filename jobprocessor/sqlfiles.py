"""The versioned DBA scripts in sql/, executed verbatim by the Alembic revisions (one source of truth)."""
from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def read_sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text()


def execute_sql_file(connection, name: str) -> None:
    """Run a whole script on a SQLAlchemy connection through the DBAPI cursor, so that the script's text reaches
    PostgreSQL untouched (no bind-parameter or %-parsing of its colons and percent signs)."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(read_sql_file(name))
    finally:
        cursor.close()
