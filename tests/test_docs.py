"""The README documents every setting (so the table cannot silently fall behind config.py)."""
from pathlib import Path

from jobprocessor.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    missing = [name for name, _, _ in Settings.documentation() if f"`{name}`" not in README]
    assert missing == []


def test_readme_gives_the_two_commands():
    assert "make run" in README and "make test" in README
