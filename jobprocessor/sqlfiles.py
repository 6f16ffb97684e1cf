"""The versioned DBA scripts in sql/, executed verbatim by the Alembic revisions (one source of truth)."""
from __future__ import annotations

from .shipped import SQL_DIR


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


def split_statements(script: str) -> list[str]:
    """A script's statements, one string each, as psql would send them: split on `;` outside quotes ('...',
    "...", $tag$...$tag$) and comments (-- and /* */, which nest). Comment-only pieces are dropped."""
    statements: list[str] = []
    start, i, n = 0, 0, len(script)
    meaningful = False  # the current piece holds more than whitespace and comments
    while i < n:
        ch = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if script.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if script.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif script.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if ch in ("'", '"'):
            i += 1
            while i < n:
                if script[i] == ch:
                    if i + 1 < n and script[i + 1] == ch:  # '' or "" is an escaped quote
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            meaningful = True
            continue
        if ch == "$":
            end_tag = script.find("$", i + 1)
            tag = script[i:end_tag + 1] if end_tag > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum() and not tag[1].isdigit()):
                close = script.find(tag, end_tag + 1)
                i = n if close < 0 else close + len(tag)
                meaningful = True
                continue
        if ch == ";":
            if meaningful:
                statements.append(script[start:i].strip())
            start, meaningful = i + 1, False
        elif not ch.isspace():
            meaningful = True
        i += 1
    if meaningful:
        statements.append(script[start:].strip())
    return statements


def execute_sql_file_statements(connection, name: str) -> None:
    """Run a script one statement at a time, as psql does. Needed for scripts with CREATE INDEX CONCURRENTLY:
    PostgreSQL runs a multi-statement query string as one implicit transaction, where CONCURRENTLY is refused.
    Call it on a connection in autocommit mode (Alembic: `with op.get_context().autocommit_block():`)."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        for statement in split_statements(read_sql_file(name)):
            cursor.execute(statement)
    finally:
        cursor.close()
