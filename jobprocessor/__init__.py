"""jobprocessor: cron-triggered background jobs out of PostgreSQL.

`create_app()` is the application factory: configuration -> extensions -> blueprints -> CLI -> handler modules.
Nothing reads configuration at import time.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from flask import Flask

from .config import ConfigError, Settings

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
BUILTIN_HANDLER_MODULES: tuple[str, ...] = (
    "jobprocessor.handlers.system",  # system.cleanup
    "jobprocessor.handlers.product_optimize",  # product.optimize
)


@dataclass
class JobProcessorState:
    """What the app keeps under app.extensions["jobprocessor"]."""

    settings: Settings


def _engine_options(settings: Settings) -> dict[str, Any]:
    return {
        # QueuePool keeps DB_POOL_MIN connections and opens up to DB_POOL_MAX under load
        "pool_size": settings.DB_POOL_MIN,
        "max_overflow": settings.DB_POOL_MAX - settings.DB_POOL_MIN,
        "pool_timeout": 10,
        # a connection killed by a database restart or failover is noticed before use, not by a failed request
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5, "application_name": "jobprocessor"},
    }


def _configure_logging() -> None:
    logger = logging.getLogger("jobprocessor")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


def _import_handler_modules(settings: Settings) -> None:
    for name in BUILTIN_HANDLER_MODULES + settings.JOBPROCESSOR_HANDLERS:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"JOBPROCESSOR_HANDLERS: cannot import {name!r} ({exc})") from exc


def create_app(settings: Optional[Settings] = None, **overrides: Any) -> Flask:
    """Build the app. `settings` defaults to the environment; keyword overrides win over either."""
    from .api import register_api
    from .cli import register_cli
    from .extensions import db, migrate
    from .metrics import instrument_pool, register_scrape_collector
    from .ratelimit.prometheus import collect as rate_limiter_metrics

    if settings is None:
        settings = Settings.from_env(os.environ, **overrides)
    elif overrides:
        settings = Settings.from_env({}, **{**settings.__dict__, **overrides})
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.DATABASE_URL,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings),
        MAX_CONTENT_LENGTH=settings.MAX_REQUEST_BYTES,
    )
    app.json.sort_keys = False
    app.extensions["jobprocessor"] = JobProcessorState(settings)
    db.init_app(app)
    with app.app_context():
        instrument_pool(db.engine)  # pool gauges for /metrics
    register_scrape_collector(rate_limiter_metrics)  # the shared OpenAI budget, read from PostgreSQL per scrape
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    register_api(app)
    register_cli(app)
    _import_handler_modules(settings)
    _configure_logging()
    return app


__all__ = ["create_app", "Settings", "ConfigError"]
