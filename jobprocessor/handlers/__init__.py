"""The handler API: `from jobprocessor.handlers import handler, RetryLater, PermanentError`."""
from ..handler_registry import HandlerSpec, get_handler, handler, registered_types
from ..job import Job, PermanentError, RetryLater

__all__ = ["handler", "RetryLater", "PermanentError", "Job", "HandlerSpec", "get_handler", "registered_types"]
