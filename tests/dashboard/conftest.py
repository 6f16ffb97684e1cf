"""The dashboard tests' fixtures: `dash` (an app with the dashboard's secrets set), `dash_client`, `operator` (a
client signed in as the operator)."""
from __future__ import annotations

import pytest

from jobprocessor import create_app
from tests.support.dashboard_fixtures import DASHBOARD_SETTINGS, OPERATOR_SECRET, sign_in
from tests.support.settings import make_settings


@pytest.fixture
def dash(database_url, clean_db):
    app = create_app(make_settings(database_url, **DASHBOARD_SETTINGS))
    app.config["TESTING"] = True
    with app.app_context():
        yield app
        from jobprocessor.extensions import db

        db.engine.dispose()


@pytest.fixture
def dash_client(dash):
    return dash.test_client()


@pytest.fixture
def operator(dash_client):
    assert sign_in(dash_client, OPERATOR_SECRET).status_code == 302
    return dash_client
