"""tests/ mirrors jobprocessor/: a test directory per package it tests (plus e2e/ for whole-system runs through a
real gunicorn, chaos/ for `make chaos`), helpers and worker processes only in tests/support/ (with the tests of
the helpers themselves, such as the fake OpenAI server's)."""
from __future__ import annotations


from tests.support.settings import ROOT

TESTS = ROOT / "tests"
NOT_PACKAGES = {"support", "e2e", "chaos", "__pycache__"}


def test_each_test_directory_mirrors_a_package():
    packages = {p.name for p in (ROOT / "jobprocessor").iterdir() if (p / "__init__.py").exists()}
    directories = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in NOT_PACKAGES}
    assert directories <= packages, f"test directories without a package: {directories - packages}"


def test_helpers_live_in_support():
    stray = [p.relative_to(TESTS).as_posix() for p in TESTS.rglob("*.py")
             if not p.name.startswith("test_") and p.name not in ("__init__.py", "conftest.py")
             and p.parent.name not in ("support", "chaos")]
    assert stray == [], f"move these helpers to tests/support/: {stray}"
