"""The handler API: `from jobprocessor.handlers import handler, RetryLater, PermanentError`.

Re-exported from jobprocessor/handler_registry.py and jobprocessor/job.py, which the rest of jobprocessor imports
instead: this package also holds the built-in handlers, which use maintenance and the limiter (tests/test_layers.py).
"""
from ..handler_registry import HandlerSpec, get_handler, handler, registered_types
from ..job import Job, PermanentError, RetryLater

__all__ = ["handler", "RetryLater", "PermanentError", "Job", "HandlerSpec", "get_handler", "registered_types"]
