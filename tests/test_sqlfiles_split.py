"""Splitting a script into the statements psql would send (jobprocessor.sqlfiles.split_statements): pure."""
from jobprocessor.sqlfiles import split_statements


def test_plain_statements_and_comments():
    script = "-- a; comment\nSET x = 1;\n/* block; /* nested; */ still */ SELECT 1;\n\n-- trailing only\n"
    # comments stay with the statement they precede (PostgreSQL ignores them); a piece of only comments is dropped
    assert split_statements(script) == ["-- a; comment\nSET x = 1", "/* block; /* nested; */ still */ SELECT 1"]


def test_quotes_and_dollar_quotes_keep_their_semicolons():
    script = ("SELECT 'a;b', 'it''s;';\nSELECT \"we;ird\" FROM t;\n"
              "DO $$ BEGIN PERFORM 1; END $$;\n"
              "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n"
              "SELECT $1 + 2")
    assert split_statements(script) == [
        "SELECT 'a;b', 'it''s;'", 'SELECT "we;ird" FROM t', "DO $$ BEGIN PERFORM 1; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$", "SELECT $1 + 2"]


def test_empty_statements_are_dropped():
    assert split_statements(";;  ;\n-- x\n") == []
