"""The handler API: `from jobprocessor.handlers import handler, RetryLater, PermanentError`."""
from ..job import Job, PermanentError, RetryLater
from .registry import HandlerSpec, get_handler, handler, registered_types

__all__ = ["handler", "RetryLater", "PermanentError", "Job", "HandlerSpec", "get_handler", "registered_types"]
