"""docs/ARCHITECTURE.md's "Who owns which table" is what the code does: every SQL string in jobprocessor/ is read
for the tables it writes (INSERT INTO, UPDATE, DELETE FROM, TRUNCATE) and reads (FROM, JOIN), and the table in the
doc must list exactly those modules. A new writer of a table is a change to that table's ownership, made on purpose."""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jobprocessor"
WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE)\s+(\w+)", re.IGNORECASE)
READ = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)", re.IGNORECASE)
SQL_ONLY = "(SQL only)"


def tables() -> set[str]:
    return set(re.findall(r"CREATE TABLE (?:public\.)?(\w+)", (ROOT / "sql" / "schema.sql").read_text()))


def sql_strings(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):  # f-strings: their literal parts
            yield "".join(part.value for part in node.values if isinstance(part, ast.Constant))


def scanned() -> dict[str, tuple[set[str], set[str]]]:
    known = tables()
    writers, readers = defaultdict(set), defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for sql in sql_strings(path):
            writers_here = {t for t in WRITE.findall(sql) if t in known}
            for table in writers_here:
                writers[table].add(module)
            for table in set(READ.findall(sql)) & known:
                readers[table].add(module)
    return {t: (writers[t], readers[t] - writers[t]) for t in known}


def documented() -> dict[str, tuple[set[str], set[str]]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Who owns which table", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            def modules(cell):
                return set() if cell in ("", SQL_ONLY) else set(re.findall(r"`([^`]+)`", cell))
            rows[cells[0].strip("`")] = (modules(cells[1]), modules(cells[2]))
    return rows


def test_the_scan_finds_the_statements_it_must():
    found = scanned()
    assert "queries.py" in found["jobs"][0] and "schedules.py" in found["job_schedules"][0]
    assert "dashboard/data.py" in found["jobs"][1]


def test_every_table_is_documented_with_the_modules_that_write_and_read_it():
    found, doc = scanned(), documented()
    assert sorted(doc) == sorted(found), "docs/ARCHITECTURE.md lists other tables than sql/schema.sql has"
    wrong = {t: {"code": found[t], "doc": doc[t]} for t in found if found[t] != doc[t]}
    assert not wrong, f"update docs/ARCHITECTURE.md's ownership table (or move the SQL to its owner): {wrong}"


def test_each_table_has_one_writer_but_the_documented_exceptions():
    shared = {t: w for t, (w, _) in scanned().items() if len(w) > 1}
    assert shared == {"jobs": {"queries.py", "bulk/actions.py", "workflows/write.py"},
                      "job_ticks": {"ticks.py", "queries.py"}}
