"""Bounded deferral. Pure.

A job can be put off without spending an attempt: its handler raised RetryLater, or the end of a call's budget cut
it short. Neither is the job's fault, so neither counts as an attempt — but without a bound such a job could come
back forever (a handler that always asks to retry later, a job that never fits in any call's budget). So a job put
off more than `max_count` times in all, or still being put off `max_s` seconds after the first time, fails with a
last_error that says so. A manual retry starts both afresh.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional


def exceeded(deferrals_before: int, first_deferred_at: Optional[datetime], now: datetime, *, max_count: int,
             max_s: float) -> Optional[str]:
    """Why deferring the job once more goes over the bound (None: it may be deferred). `deferrals_before` is how
    often it was put off before this time."""
    count = deferrals_before + 1
    if count > max_count:
        return f"deferred {count} times without running to an end (JOBS_MAX_DEFERRALS={max_count})"
    if first_deferred_at is not None:
        waited = (now - first_deferred_at).total_seconds()
        if waited > max_s:
            return (f"still deferred {waited:.0f}s after it was first put off (JOBS_MAX_DEFERRAL_S={max_s:g}), "
                    f"{count} times in all")
    return None
