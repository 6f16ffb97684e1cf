"""5-field cron expressions, in UTC: `minute hour day-of-month month day-of-week`.

    Cron.parse("0 3 * * *").next_after(datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc))  # 2026-01-02 03:00 UTC

Each field: `*`, a number, a range `a-b`, a step `*/n` or `a-b/n` or `a/n` (from a to the field's end), or a
comma-separated list of those. Months may be written jan..dec, weekdays sun..sat; weekday 0 and 7 are both Sunday.
As in Vixie cron, when both day-of-month and day-of-week are restricted (neither is `*`), a day matches if EITHER
matches. Also accepted: @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually).

A small pure module (no clock, no database) rather than a dependency: the schedules need exactly "the next slot
after t", which is forty lines, and owning them keeps the semantics documented and tested here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
# (name, lowest, highest, names)
FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day-of-month", 1, 31, None),
          ("month", 1, 12, MONTHS), ("day-of-week", 0, 7, WEEKDAYS))
SEARCH_YEARS = 28  # the calendar repeats every 28 years (within 1901-2099): no match by then means never


# ASCII digits only: str.isdigit() also accepts "²" or "١", which int() refuses or reads as another number
_DIGITS = re.compile(r"[0-9]{1,9}")


class CronError(ValueError):
    """The expression is not a valid 5-field cron expression; the message says which part and why."""


def _number(text: str, field: str, lo: int, hi: int, names) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not _DIGITS.fullmatch(text):
            raise CronError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
        value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"{field}: {value} is outside {lo}-{hi}")
    return value


def _field(text: str, field: str, lo: int, hi: int, names) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text) or int(step_text) < 1:
                raise CronError(f"{field}: step {step_text!r} must be a whole number of at least 1")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, field, lo, hi, names), _number(last, field, lo, hi, names)
            if start > end:
                raise CronError(f"{field}: range {base!r} runs backwards")
        elif base:
            start = _number(base, field, lo, hi, names)
            end = hi if slash else start
        else:
            raise CronError(f"{field}: empty item in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset  # 0 = Sunday .. 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> "Cron":
        if not isinstance(expression, str):
            raise CronError("a cron expression must be a string")
        text = ALIASES.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != 5:
            raise CronError(f"{expression!r} has {len(parts)} fields; expected 5: minute hour day-of-month month "
                            "day-of-week (or @hourly, @daily, @weekly, @monthly, @yearly)")
        sets = [_field(part, *spec) for part, spec in zip(parts, FIELDS)]
        weekdays = frozenset(d % 7 for d in sets[4])
        cron = cls(expression.strip(), sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] != "*",
                   parts[4] != "*")
        if cron.next_after(datetime(2000, 1, 1, tzinfo=timezone.utc)) is None:
            raise CronError(f"{expression!r} never matches a real date")
        return cron

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, moment: datetime) -> datetime | None:
        """The first matching minute strictly after `moment` (UTC; a naive moment is taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        start = (moment.astimezone(timezone.utc) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        day = start.replace(hour=0, minute=0)
        limit = day + timedelta(days=366 * SEARCH_YEARS)
        while day < limit:
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None
