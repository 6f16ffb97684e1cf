"""The handler API: `from jobprocessor.handlers import handler, RetryLater, PermanentError`."""
from .registry import HandlerSpec, Job, PermanentError, RetryLater, get_handler, handler, registered_types

__all__ = ["handler", "RetryLater", "PermanentError", "Job", "HandlerSpec", "get_handler", "registered_types"]
