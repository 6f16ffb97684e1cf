"""Fixtures for the rate-limiter tests (import them into a test module:
`from tests.support.limiter_fixtures import ...`).

The limiter's tables are not part of conftest's per-test clean-up (they belong to this feature), so each test that
uses the limiter starts from an empty limiter, and no output-size history, with `fresh_limiter`.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.fake_openai import FakeOpenAI
from tests.support.settings import make_settings


def reset_limiter(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rate_limiter_waits"))
        conn.execute(text("DELETE FROM rate_limiter"))
        conn.execute(text("DELETE FROM openai_output_stats"))
        conn.execute(text("DELETE FROM openai_output_retry_caps"))


def limiter_row(engine, name: str = "openai"):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM rate_limiter WHERE name = :n"), {"n": name}).mappings().first()


@pytest.fixture
def fresh_limiter(raw_engine):
    reset_limiter(raw_engine)
    yield raw_engine
    reset_limiter(raw_engine)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def openai_settings(database_url: str, fake: FakeOpenAI | None, **overrides):
    values = dict(OPENAI_API_KEY=fake.api_key if fake else "", OPENAI_BASE_URL=fake.base_url if fake else "",
                  OPENAI_MAX_OUTPUT_TOKENS=400)
    values.update(overrides)
    return make_settings(database_url, **values)
