"""jobprocessor/devdb.py: where the embedded server's data lives, and what it will not take over."""
import os

import pytest

from jobprocessor import devdb


def test_an_empty_pgdata_variable_is_unset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBPROCESSOR_PGDATA", "")
    assert devdb.data_dir() == (tmp_path / ".pgdata").resolve()


def test_a_set_pgdata_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("JOBPROCESSOR_PGDATA", str(tmp_path / "data"))
    assert devdb.data_dir() == (tmp_path / "data").resolve()


def test_a_folder_holding_something_else_is_neither_chowned_nor_initialised(tmp_path):
    # (an empty JOBPROCESSOR_PGDATA once pointed initdb at a checkout, whose owner became the server user)
    (tmp_path / "setup.cfg").write_text("[metadata]\n")
    before = os.stat(tmp_path)
    with pytest.raises(SystemExit, match="not empty and holds no PostgreSQL data directory"):
        devdb._initdb(tmp_path)
    after = os.stat(tmp_path)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setup.cfg"]
