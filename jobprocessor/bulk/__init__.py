"""Bulk actions on jobs (retry, cancel) for POST /jobs/bulk, `flask jobs retry|cancel` and the dashboard: the
request and its filter (filter.py, pure), the batched SQL (actions.py), the action log (log.py)."""
from .actions import Actor, BulkResult, count_matching, run
from .filter import ACTIONS, BulkError, BulkFilter, BulkRequest, normalise_error, parse_filter, parse_request

__all__ = ["ACTIONS", "Actor", "BulkError", "BulkFilter", "BulkRequest", "BulkResult", "count_matching",
           "normalise_error", "parse_filter", "parse_request", "run"]
