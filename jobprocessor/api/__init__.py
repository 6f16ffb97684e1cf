"""HTTP blueprints. Every response, errors included, is JSON."""
from flask import Flask

from . import batches, bulk, flow, health, jobs, openapi, ops, process_pending, ratelimiter
from .errors import register_error_handlers


def register_api(app: Flask) -> None:
    for module in (process_pending, bulk, jobs, batches, health, ops, ratelimiter, flow, openapi):
        app.register_blueprint(module.bp)
    register_error_handlers(app)
