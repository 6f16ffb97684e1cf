"""Validation shared by the maintenance services' configs: a bad value is a ValueError naming the field."""
from __future__ import annotations

from datetime import timedelta


def positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {value!r}")


def positive_seconds(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")


def not_negative(name: str, value) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValueError(f"{name} must be a timedelta of 0 or more, not {value!r}")
