"""What every test shares about its settings: the repository root, the cron secret and its header, and
Settings built as the test app builds them."""
from __future__ import annotations

from pathlib import Path

from jobprocessor.config import Settings, normalise_database_url

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def make_settings(database_url: str, **overrides) -> Settings:
    # no idle grace: a test's call ends as soon as its queue is dry (tests of the grace set it)
    values = dict(DATABASE_URL=normalise_database_url(database_url), CRON_SECRET=SECRET,
                  JOBPROCESSOR_HANDLERS=("tests.support.job_handlers",), JOBS_IDLE_GRACE_S=0.0)
    values.update(overrides)
    return Settings.from_env({}, **values)
