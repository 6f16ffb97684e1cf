"""GET /openapi.json: the OpenAPI 3.0 description of every endpoint, those of the README's "HTTP API" table.

The description is data kept beside the code it describes; tests/api/test_openapi.py checks it against the live app
(schemathesis, plus tests that every route the app serves is described and is a row of the README's table).
Like every endpoint but /healthz it needs the secret: the API surface is no one else's business, and a scanner
without the secret learns nothing (the 401 comes before any work).
"""
from __future__ import annotations

from copy import deepcopy

from flask import Blueprint, jsonify

from ..enqueue import CALLBACK_FIELDS, MAX_IDENTIFIER_LENGTH, MAX_JOBS_PER_REQUEST, PRIORITY_NAMES
from ..handler_registry import registered_types
from ..job import JOB_STATUSES
from ..workflows import plan as workflow_plan
from .auth import require_secret
from .params import accepts

bp = Blueprint("openapi", __name__)

MAX_JOB_ID = 2**63 - 1
WAIT_CODES = ["leased", "parents", "no_handler", "paused", "limiter_hold", "token_quota", "backoff", "not_due",
              "store_running_limit", "store_rate_limit", "behind_higher_priority", "waiting_for_turn"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NO_NUL = "^[^\\u0000]*$"  # PostgreSQL text cannot hold NUL: such a value is a 400
_IDENTIFIER = {"type": "string", "minLength": 1, "maxLength": MAX_IDENTIFIER_LENGTH, "pattern": _NO_NUL}
_FILTER = {"type": "string", "maxLength": MAX_IDENTIFIER_LENGTH, "pattern": _NO_NUL}
_NULLABLE_TEXT = {"type": "string", "nullable": True}
_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}

_TIME_FILTER = {"type": "string", "format": "date-time", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-",
                "description": "years 1970 to 9999; no offset: UTC"}


def _left_out(schema: dict) -> dict:
    """A bulk filter field as the app reads it: null, or an empty string (what a form sends), is the field left out."""
    return {"anyOf": [schema, {"type": "string", "enum": [""]}], "nullable": True,
            **({"description": schema["description"]} if "description" in schema else {})}


def _bulk_request(action: str, statuses: list) -> dict:
    request = {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {
            "action": {"type": "string", "enum": [action]},
            "filter": {"type": "object", "additionalProperties": False, "properties": {
                "status": {"type": "string", "enum": statuses, "description": f"default: {' and '.join(statuses)}"},
                "type": _FILTER, "store_id": _FILTER, "batch_id": _FILTER,
                "error_contains": {**_FILTER, "description": "text in last_error, case-insensitive"},
                "error_group": {**_FILTER, "description": "a normalised error, as the dashboard's Failed page "
                                                          "groups them"},
                "created_after": _TIME_FILTER, "created_before": _TIME_FILTER,
            }},
            "dry_run": {"type": "boolean", "description": "true: count the jobs it would change, change nothing"},
        },
    }
    properties = request["properties"]
    properties["filter"]["properties"] = {name: _left_out(field)
                                          for name, field in properties["filter"]["properties"].items()}
    properties["filter"] = {**properties["filter"], "nullable": True, "description": "null: no filter"}
    properties["dry_run"] = {**properties["dry_run"], "nullable": True}
    return request


# Answers every protected endpoint can give besides its own.
_COMMON = {
    "401": {**_error("Missing or wrong secret."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "503": _error("The database is unreachable, or CRON_SECRET is not configured (fail closed)."),
}

_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "a stable machine-readable code"},
            "message": {"type": "string", "description": "one clear sentence"},
            "field": {"type": "string", "description": "the offending field (job validation)"},
            "index": {"type": "integer", "description": "position of the offending job in a batch"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "type", "payload", "status", "priority", "attempts", "max_attempts"],
        "properties": {
            "id": {"type": "integer", "format": "int64", "minimum": 1},
            "type": {"type": "string"},
            "payload": {"type": "object"},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "priority": {"type": "integer", "minimum": 1, "maximum": 10},
            "store_id": _NULLABLE_TEXT,
            "user_id": _NULLABLE_TEXT,
            "run_at": {"type": "string", "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _NULLABLE_TIME,
            "completed_at": _NULLABLE_TIME,
            "attempts": {"type": "integer", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
            "last_error": _NULLABLE_TEXT,
            "result": {"nullable": True, "description": "what the handler returned (any JSON)"},
            "locked_by": _NULLABLE_TEXT,
            "locked_until": _NULLABLE_TIME,
            "idempotency_key": _NULLABLE_TEXT,
            "batch_id": _NULLABLE_TEXT,
            "deferrals": {"type": "integer", "minimum": 0,
                          "description": "times put off without spending an attempt (RetryLater, cut by a budget)"},
            "deferred_since": _NULLABLE_TIME,
            "last_traceback": {**_NULLABLE_TEXT, "description": "GET /jobs/{job_id} only: the traceback of the "
                                                                "error in last_error, its last 8,000 characters"},
            "waits_for": {"type": "integer", "minimum": 0,
                          "description": "parents whose end the job still waits for (status waiting until 0)"},
            "on_parent_failure": {"type": "string", "enum": list(workflow_plan.POLICIES), "nullable": True,
                                  "description": "what a parent that does not complete does to the job; null: no "
                                                 "parents"},
            "singleton_key": _NULLABLE_TEXT,
        },
    },
    "JobDetail": {
        "allOf": [_ref("Job"), {
            "type": "object",
            "required": ["parents", "children", "steps"],
            "properties": {
                "parents": {"type": "array", "description": "the first 100 parents by id (status null: deleted)",
                            "items": {"type": "object", "properties": {
                                "id": {"type": "integer"}, "type": _NULLABLE_TEXT, "status": _NULLABLE_TEXT,
                                "resolved": {"type": "boolean", "description": "its end has been counted"}}}},
                "parents_total": {"type": "integer", "minimum": 0},
                "children": {"type": "array", "description": "the first 100 jobs that wait for this one, by id",
                             "items": {"type": "object", "properties": {
                                 "id": {"type": "integer"}, "type": _NULLABLE_TEXT, "status": _NULLABLE_TEXT}}},
                "children_total": {"type": "integer", "minimum": 0},
                "steps": {"type": "array", "description": "finished job.step() results, oldest first (first 20)",
                          "items": {"type": "object", "properties": {
                              "name": {"type": "string"}, "result": {"description": "any JSON"},
                              "created_at": {"type": "string", "format": "date-time"}}}},
                "steps_total": {"type": "integer", "minimum": 0},
                "on_complete_of": {**_NULLABLE_TEXT, "description": "the batch whose on_complete job this is"},
            },
        }],
    },
    "NewJob": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "description": "every field but type may be null: the same as leaving it out (the default)",
        "properties": {
            "type": {"type": "string", "minLength": 1, "maxLength": MAX_IDENTIFIER_LENGTH,
                     "description": "a registered job type; unknown: 422"},
            "payload": {"type": "object", "description": "JSON object, nested at most MAX_PAYLOAD_DEPTH levels, "
                                                         "at most MAX_PAYLOAD_BYTES as JSON, no NUL character"},
            "priority": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 10},
                                   {"type": "string", "enum": list(PRIORITY_NAMES)}],
                         "description": "1 urgent, 2 high, 5 normal (default), 10 low; lower runs first"},
            "run_at": {"type": "string", "format": "date-time", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-",
                       "description": "not before; years 1970 to 9999; no offset: UTC"},
            "store_id": _IDENTIFIER,
            "user_id": _IDENTIFIER,
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
            "idempotency_key": {**_IDENTIFIER, "description": "a repeat returns the existing job (200)"},
            "batch_id": _IDENTIFIER,
            "depends_on": {
                "type": "array", "maxItems": workflow_plan.MAX_PARENTS,
                "items": {"oneOf": [
                    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_JOB_ID,
                     "description": "an existing job (unknown: 422 unknown_parent)"},
                    {"type": "object", "required": ["index"], "additionalProperties": False,
                     "properties": {"index": {"type": "integer", "minimum": 0,
                                              "maximum": MAX_JOBS_PER_REQUEST - 1}},
                     "description": "an earlier job of the same request (a later one, or itself: 422 "
                                    "invalid_reference)"}]},
                "description": "the job is `waiting` until every parent has ended, then pending"},
            "depends_on_batch": {**_IDENTIFIER, "description": "wait for every job of this batch (those that exist, "
                                                               "and those listed earlier in the request)"},
            "on_parent_failure": {"type": "string", "enum": list(workflow_plan.POLICIES),
                                  "description": "cancel (default): a parent that fails or is cancelled cancels "
                                                 "the job; run: it runs once every parent has ended"},
            "singleton_key": {**_IDENTIFIER, "description": "at most one job per key is waiting, pending or "
                                                            "running; an enqueue returns the existing one (200)"},
            "debounce_s": {"type": "number", "minimum": 0, "maximum": workflow_plan.MAX_DEBOUNCE_S,
                           "description": "with singleton_key (and no run_at, no parents): run_at = now + "
                                          "debounce_s; a job of the key not started yet takes this payload and "
                                          "run_at instead of a new job"},
        },
    },
    "NewCallback": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "description": "a job enqueued once when the request's batch has no job left that can run; its payload "
                       "gains `batch`: {batch_id, total, counts}",
        "properties": {},  # NewJob's, but for the batch and workflow fields: filled in below
    },
    "NewJobs": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": MAX_JOBS_PER_REQUEST,
                                "items": _ref("NewJob")},
                       "on_complete": _ref("NewCallback")},
    },
    "Enqueued": {
        "type": "object",
        "required": ["id", "ids", "created", "job"],
        "properties": {"id": {"type": "integer"}, "ids": {"type": "array", "items": {"type": "integer"}},
                       "created": {"type": "boolean"}, "job": _ref("Job"),
                       "debounced": {"type": "boolean", "description": "true: a job of the singleton_key not "
                                                                       "started yet took this payload"}},
    },
    "EnqueuedMany": {
        "type": "object",
        "required": ["ids", "created", "duplicates", "jobs"],
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}},
            "created": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "jobs": {"type": "array", "items": {"type": "object", "required": ["id", "created"], "properties": {
                "id": {"type": "integer"}, "created": {"type": "boolean"}, "debounced": {"type": "boolean"}}}},
            "on_complete": {"type": "object", "properties": {"id": {"type": "integer"},
                                                             "created": {"type": "boolean"}}},
        },
    },
    "RunSummary": {
        "type": "object",
        "required": ["claimed", "succeeded", "retried", "failed", "released", "rescued", "duration_ms", "stores"],
        "properties": {
            "claimed": {"type": "integer", "minimum": 0},
            "succeeded": {"type": "integer", "minimum": 0},
            "retried": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
            "released": {"type": "integer", "minimum": 0, "description": "claimed but not started: back in line"},
            "rescued": {"type": "integer", "minimum": 0, "description": "expired leases taken back"},
            "abandoned": {"type": "integer", "minimum": 0, "description": "still running past their deadline"},
            "lost": {"type": "integer", "minimum": 0},
            "rounds": {"type": "integer", "minimum": 0, "description": "claim rounds that claimed jobs"},
            "duration_ms": {"type": "integer", "minimum": 0},
            "stores": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "jobs claimed per store_id (\"\" for jobs without one)"},
            "worker": {"type": "string"},
            "busy": {"type": "boolean", "description": "true: refused at once, this process already runs "
                                                      "JOBS_MAX_TICKS_PER_PROCESS calls"},
            "message": {"type": "string"},
        },
    },
    "RunParameters": {
        "type": "object",
        "description": "the same parameters as the query string (which wins); null means the default; any "
                       "other key is a 400",
        "additionalProperties": False,
        "properties": {
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000000, "nullable": True},
            "budget_s": {"type": "number", "minimum": 1, "maximum": 900, "nullable": True},
            "type": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NO_NUL, "nullable": True},
        },
    },
    "BatchProgress": {
        "type": "object",
        "required": ["progress"],
        "properties": {
            "batch_id": {"type": "string"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                       "description": "jobs per status"},
            "total": {"type": "integer", "minimum": 0},
            "progress": {"type": "number", "minimum": 0, "maximum": 1,
                         "description": "share of the batch's jobs that are final"},
            "on_complete": {"type": "object", "nullable": True, "description": "the batch's on_complete job",
                            "properties": {"id": {"type": "integer"}, "status": _NULLABLE_TEXT}},
        },
    },
    "QueueHealth": {
        "type": "object",
        "properties": {
            "health": {"type": "array", "items": {"type": "object"},
                       "description": "the rows of the job_queue_health view"},
            "alerts": {"type": "array", "items": {"type": "object"},
                       "description": "the alerts that fire now (job_queue_alerts: severity, message, ...)"},
        },
    },
    "Ticks": {
        "type": "object",
        "required": ["ticks", "last_tick_age_s"],
        "properties": {
            "ticks": {"type": "array", "items": {"type": "object", "description": "one call: worker, started_at, "
                                                                                "ended_at (null: running or died), "
                                                                                "duration_s, rounds, claimed, "
                                                                                "succeeded, ..., busy_s"}},
            "last_tick_age_s": {"type": "number", "nullable": True,
                                "description": "seconds since the last call started (null: none recorded)"},
            "next_before": {"type": "integer", "nullable": True},
        },
    },
    "Pause": {
        "type": "object",
        "required": ["id", "type", "store_id", "created_at"],
        "properties": {
            "id": {"type": "integer", "format": "int64", "minimum": 1},
            "type": {**_NULLABLE_TEXT, "description": "the paused job type (null: every type of the store)"},
            "store_id": {**_NULLABLE_TEXT, "description": "the paused store (null: the type in every store)"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "NewPause": {
        "type": "object",
        "additionalProperties": False,
        "description": "a type, a store_id, or both (one type of one store); claims skip the jobs it covers from "
                       "their next round; running jobs finish",
        "properties": {"type": {**_IDENTIFIER, "nullable": True}, "store_id": {**_IDENTIFIER, "nullable": True}},
        "anyOf": [{"required": ["type"], "properties": {"type": _IDENTIFIER}},
                  {"required": ["store_id"], "properties": {"store_id": _IDENTIFIER}}],
    },
    "Limit": {
        "type": "object",
        "required": ["store_id", "type", "max_running", "max_starts_per_minute", "weight",
                     "openai_tokens_per_minute"],
        "properties": {
            "store_id": {**_NULLABLE_TEXT, "description": "null: every store, each on its own"},
            "type": {**_NULLABLE_TEXT, "description": "null: the store's jobs of every type together"},
            "max_running": {"type": "integer", "nullable": True, "minimum": 0,
                            "description": "jobs running at once, counted from live leases across every caller"},
            "max_starts_per_minute": {"type": "integer", "nullable": True, "minimum": 0,
                                      "description": "jobs claimed in any 60 s"},
            "weight": {"type": "integer", "nullable": True, "minimum": 1, "maximum": 1000,
                       "description": "jobs per round of the fair claim (default 1); per store only"},
            "openai_tokens_per_minute": {"type": "integer", "nullable": True, "minimum": 1,
                                         "description": "the store's share of the shared OpenAI tokens/min; per "
                                                        "store only"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "LimitPut": {
        "type": "object",
        "required": ["store_id"],
        "additionalProperties": False,
        "description": "replaces the row of (store_id, type) as a whole: a field left out is not set there (a "
                       "store's value is its own row's, else the every-store row's); at least one field",
        "properties": {
            "store_id": {**_IDENTIFIER, "nullable": True},
            "type": {**_IDENTIFIER, "nullable": True},
            "max_running": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 1000000},
            "max_starts_per_minute": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 1000000},
            "weight": {"type": "integer", "nullable": True, "minimum": 1, "maximum": 1000},
            "openai_tokens_per_minute": {"type": "integer", "nullable": True, "minimum": 1, "maximum": 2000000000},
        },
        # at least one field set; weight and openai_tokens_per_minute only for a store as a whole (no type)
        "anyOf": [{"required": [name], "properties": {name: {"type": "integer"}}}
                  for name in ("max_running", "max_starts_per_minute", "weight", "openai_tokens_per_minute")],
        "not": {"anyOf": [{"required": ["type", name], "properties": {"type": {"type": "string"},
                                                                      name: {"type": "integer"}}}
                          for name in ("weight", "openai_tokens_per_minute")]},
    },
    "WaitReasons": {
        "type": "object",
        "required": ["job_id", "status", "reasons"],
        "properties": {
            "job_id": {"type": "integer", "format": "int64"},
            "status": {"type": "string"},
            "reasons": {"type": "array", "items": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": WAIT_CODES},
                    "message": {"type": "string"},
                    "until": {"type": "string", "format": "date-time", "description": "when it ends, if known"},
                    "details": {"type": "object", "description": "the figures behind the message (stores_ahead, "
                                                                 "running, max_running, pause_id, locked_by, ...)"},
                }}},
        },
    },
    "BulkRequest": {
        "oneOf": [_ref("BulkRetry"), _ref("BulkCancel")],
        "description": "retry: failed or cancelled jobs back to pending with fresh attempts; cancel: pending jobs "
                       "to cancelled. `filter.status` may only narrow the statuses the action changes.",
    },
    "BulkRetry": _bulk_request("retry", ["failed", "cancelled"]),
    "BulkCancel": _bulk_request("cancel", ["pending"]),
    "BulkResult": {
        "type": "object",
        "required": ["action", "dry_run", "filter"],
        "properties": {
            "matched": {"type": "integer", "minimum": 0, "description": "jobs matching when it started"},
            "changed": {"type": "integer", "minimum": 0, "description": "(not on a dry run) jobs changed"},
            "action": {"type": "string"}, "dry_run": {"type": "boolean"}, "filter": {"type": "object"},
            "action_id": {"type": "integer", "description": "its entry in the action log"},
        },
    },
    "RateLimiterStats": {
        "type": "object",
        "description": "the shared OpenAI limiter: used and limit per window (requests; tokens used and tokens "
                       "charged, as OpenAI counts them), utilisation, jobs waiting on it, and output_caps: per job "
                       "type and model, the max_completion_tokens calls send now",
    },
}

_SCHEMAS["NewCallback"]["properties"] = {name: prop for name, prop in _SCHEMAS["NewJob"]["properties"].items()
                                         if name in CALLBACK_FIELDS}

_RUN_QUERY = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000},
     "description": "most jobs to claim over all the call's rounds (default JOBS_MAX_PER_RUN)"},
    {"name": "budget_s", "in": "query", "schema": {"type": "number", "minimum": 1, "maximum": 900},
     "description": "seconds the call claims and runs jobs (default JOBS_MAX_RUNTIME_S)"},
    {"name": "type", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NO_NUL},
     "description": "only jobs of this registered type; unknown: 422"},
]

_RUN_RESPONSES = {
    "200": _json("What the call did.", _ref("RunSummary")),
    "400": _error("A parameter is out of range or malformed, or unknown (named in the message)."),
    "413": _error("The body is larger than MAX_REQUEST_BYTES."),
    "415": _error("A body that is not application/json."),
    "422": _error("No handler is registered for `type`."),
    **_COMMON,
    "401": {**_error("No configured method admitted the request: the message names each method tried and why it "
                     "refused (expired, wrong key, body or URL not the signed ones, replayed, ...)."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "503": _error("The database is unreachable, or no auth method is configured at all (fail closed)."),
}

# The trigger endpoint's callers: any one of these admits a call (README, "Signed triggers")
_TRIGGER_SECURITY = [{"bearer": []}, {"cronSecret": []}, {"qstash": []}, {"googleOidc": []},
                     {"hmacTimestamp": [], "hmacSignature": []}]

_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_JOB_ID}}


def _transition(summary: str, allowed: str) -> dict:
    return {"post": {
        "summary": summary, "operationId": summary.split()[0].lower() + "_job", "parameters": [_JOB_ID],
        "responses": {"200": _json("The job after the change.", _ref("Job")),
                      "400": _error("job_id is not a valid id."),
                      "404": _error("No such job."),
                      "409": _error(f"Only {allowed} jobs can be changed this way."), **_COMMON}}}


_PATHS = {
    "/process-pending": {
        "post": {
            "summary": "Claim due jobs and run them within the budget (the cron's entry point)",
            "operationId": "process_pending",
            "security": _TRIGGER_SECURITY,
            "parameters": _RUN_QUERY,
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("RunParameters")}}},
            "responses": _RUN_RESPONSES,
        },
        "get": {
            "summary": "The same as POST, for Vercel Cron (which sends GET with the Bearer header)",
            "operationId": "process_pending_get",
            "security": _TRIGGER_SECURITY,
            "parameters": _RUN_QUERY,
            "responses": _RUN_RESPONSES,
        },
    },
    "/jobs": {
        "post": {
            "summary": "Enqueue one job, or up to 1000 as {\"jobs\": [...]}",
            "operationId": "enqueue_jobs",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"oneOf": [_ref("NewJob"), _ref("NewJobs")]}}}},
            "responses": {
                "201": _json("Created (the ids, in input order).", {"oneOf": [_ref("Enqueued"),
                                                                              _ref("EnqueuedMany")]}),
                "200": _json("Every job was an idempotent repeat: nothing enqueued.",
                             {"oneOf": [_ref("Enqueued"), _ref("EnqueuedMany")]}),
                "400": _error("A field is invalid (`field` names it, `index` its job in a batch)."),
                "409": _error("singleton_conflict: the singleton_key belongs to a job of another type; "
                              "batch_has_callback: the batch already has an on_complete job."),
                "413": _error("The body is larger than MAX_REQUEST_BYTES."),
                "415": _error("The body is not application/json."),
                "422": _error("unknown_type: no handler is registered for the job's type; invalid_payload: the "
                              "type's own payload rule; unknown_parent, unknown_batch, invalid_reference, "
                              "invalid_combination, too_many_parents: the workflow fields (README, Workflows)."),
                **_COMMON,
            },
        },
        "get": {
            "summary": "List jobs, newest first, in keyset pages (one SQL query per page)",
            "operationId": "list_jobs",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(JOB_STATUSES)}},
                {"name": "type", "in": "query", "schema": _FILTER},
                {"name": "store_id", "in": "query", "schema": _FILTER},
                {"name": "user_id", "in": "query", "schema": _FILTER},
                {"name": "batch_id", "in": "query", "schema": _FILTER},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "after", "in": "query", "description": "next_after of the previous page",
                 "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_JOB_ID}},
            ],
            "responses": {
                "200": _json("One page: up to `limit` jobs, fewer when they reach MAX_PAGE_BYTES (then "
                             "next_after is set).", {
                    "type": "object", "required": ["jobs", "next_after"], "properties": {
                    "jobs": {"type": "array", "items": _ref("Job")},
                    "next_after": {"type": "integer", "nullable": True}}}),
                "400": _error("A parameter is invalid."),
                **_COMMON,
            },
        },
    },
    "/jobs/bulk": {"post": {
        "summary": "Retry or cancel every job matching a filter, in batches (or count them: dry_run)",
        "operationId": "bulk_jobs",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BulkRequest")}}},
        "responses": {
            "200": _json("{\"matched\"} on a dry run, else {\"changed\"}; each batch is its own short "
                         "transaction, recorded in the action log.", _ref("BulkResult")),
            "400": _error("A field is invalid (`field` names it), e.g. a status the action cannot change."),
            "413": _error("The body is larger than MAX_REQUEST_BYTES."),
            "415": _error("The body is not application/json."),
            **_COMMON,
        }}},
    "/jobs/{job_id}": {"get": {
        "summary": "One job, with its parents, children and steps", "operationId": "get_job",
        "parameters": [_JOB_ID],
        "responses": {"200": _json("The job.", _ref("JobDetail")), "400": _error("job_id is not a valid id."),
                      "404": _error("No such job."), **_COMMON}}},
    "/jobs/{job_id}/retry": _transition("Retry a failed or cancelled job (fresh attempts, due now)",
                                        "failed or cancelled"),
    "/jobs/{job_id}/cancel": _transition("Cancel a pending or waiting job (and the waiting jobs that depend on it)",
                                         "pending or waiting"),
    "/batches/{batch_id}": {"get": {
        "summary": "A batch's jobs counted per status, and its progress",
        "operationId": "get_batch",
        "parameters": [{"name": "batch_id", "in": "path", "required": True, "schema": _IDENTIFIER}],
        "responses": {"200": _json("Counts and progress.", _ref("BatchProgress")),
                      "400": _error("batch_id is invalid."), "404": _error("No job carries this batch_id."),
                      **_COMMON}}},
    "/queue/health": {"get": {
        "summary": "The job_queue_health view and the alerts that fire now", "operationId": "queue_health",
        "responses": {"200": _json("Health rows and alerts.", _ref("QueueHealth")), **_COMMON}}},
    "/ticks": {"get": {
        "summary": "What the latest /process-pending calls did (job_ticks), newest first", "operationId": "ticks",
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                         "maximum": 9223372036854775807},
             "description": "the next_before of the previous page"},
        ],
        "responses": {"200": _json("Ticks, the age of the last one, and the next page's `before`.",
                                   _ref("Ticks")),
                      "400": _error("A parameter is out of range or malformed."), **_COMMON}}},
    "/pauses": {
        "post": {
            "summary": "Pause a job type, a store, or one type of a store", "operationId": "add_pause",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewPause")}}},
            "responses": {"201": _json("Paused.", _ref("Pause")),
                          "200": _json("That pause exists already (nothing changed).", _ref("Pause")),
                          "400": _error("Neither type nor store_id, or a field is invalid."),
                          "415": _error("The body is not application/json."), **_COMMON}},
        "get": {
            "summary": "The pauses in force", "operationId": "list_pauses",
            "parameters": [{"name": "type", "in": "query", "schema": _FILTER},
                           {"name": "store_id", "in": "query", "schema": _FILTER}],
            "responses": {"200": _json("Every pause (of the store / type asked for), oldest first.", {
                "type": "object", "required": ["pauses"],
                "properties": {"pauses": {"type": "array", "items": _ref("Pause")}}}),
                "400": _error("A parameter is invalid."), **_COMMON}},
    },
    "/pauses/{pause_id}": {"delete": {
        "summary": "Resume: remove a pause", "operationId": "remove_pause",
        "parameters": [{"name": "pause_id", "in": "path", "required": True,
                        "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_JOB_ID}}],
        "responses": {"204": {"description": "Removed: claims take the jobs again from their next round."},
                      "400": _error("pause_id is not a valid id."), "404": _error("No such pause."), **_COMMON}}},
    "/limits": {
        "put": {
            "summary": "Set a store's limits and weight (store_id null: every store), optionally per type",
            "operationId": "put_limit",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LimitPut")}}},
            "responses": {"201": _json("Created.", _ref("Limit")), "200": _json("Replaced.", _ref("Limit")),
                          "400": _error("A field is invalid, or no limit is given."),
                          "415": _error("The body is not application/json."), **_COMMON}},
        "get": {
            "summary": "The limits set; with store_id, that store's rows and what applies to it now",
            "operationId": "list_limits",
            "parameters": [{"name": "store_id", "in": "query", "schema": _FILTER}],
            "responses": {"200": _json("The rows (and, for a store, `effective`: per type or as a whole, the "
                                       "values that apply with running and started_last_minute).", {
                "type": "object", "required": ["limits"],
                "properties": {"limits": {"type": "array", "items": _ref("Limit")},
                               "effective": {"type": "array", "items": {"type": "object"}}}}),
                "400": _error("A parameter is invalid."), **_COMMON}},
        "delete": {
            "summary": "Remove the limits of (store_id, type) (store_id left out: the every-store row)",
            "operationId": "delete_limit",
            "parameters": [{"name": "store_id", "in": "query", "schema": _FILTER},
                           {"name": "type", "in": "query", "schema": _FILTER}],
            "responses": {"204": {"description": "Removed."}, "400": _error("A parameter is invalid."),
                          "404": _error("No such row."), **_COMMON}},
    },
    "/jobs/{job_id}/wait": {"get": {
        "summary": "Why this job is waiting (or what holds it)", "operationId": "job_wait", "parameters": [_JOB_ID],
        "responses": {"200": _json("Its status and every reason that applies now, in order.", _ref("WaitReasons")),
                      "400": _error("job_id is not a valid id."), "404": _error("No such job."), **_COMMON}}},
    "/rate-limiter/stats": {"get": {
        "summary": "The shared OpenAI rate limiter", "operationId": "rate_limiter_stats",
        "responses": {"200": _json("Used and limit per window, utilisation, jobs waiting.",
                                   _ref("RateLimiterStats")), **_COMMON}}},
    "/metrics": {"get": {
        "summary": "Prometheus metrics", "operationId": "metrics",
        "responses": {"200": {"description": "Prometheus text exposition format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}, **_COMMON}}},
    "/healthz": {"get": {
        "summary": "Liveness: 200 when the database answers", "operationId": "healthz", "security": [],
        "responses": {
            "200": _json("The database answers.", {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["ok"]}, "database": {"type": "string"},
                "api": {"type": "string", "enum": ["enabled", "disabled"],
                        "description": "disabled: CRON_SECRET is not set, the protected endpoints answer 503"},
                "warnings": {"type": "array", "items": {"type": "string"},
                             "description": "what an operator should know (e.g. the secret is not set)"},
                "auth": {"type": "object", "description": "which auth methods are on (never their secrets)",
                         "properties": {name: {"type": "boolean"} for name in
                                        ("cron_secret", "qstash", "google_oidc", "hmac")}}}}),
            "503": _error("The database is unreachable.")}}},
    "/openapi.json": {"get": {
        "summary": "This description", "operationId": "openapi",
        "responses": {"200": {"description": "OpenAPI 3.0 document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}, **_COMMON}}},
}

SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "jobprocessor",
        "version": "1",
        "description": "Cron-triggered background jobs out of PostgreSQL. Every endpoint but /healthz needs "
                       "`Authorization: Bearer <CRON_SECRET>` or `X-Cron-Secret: <CRON_SECRET>`; /process-pending "
                       "also takes a QStash signature, a Google OIDC token or a timestamped HMAC. Every error "
                       "is JSON: {\"error\": code, \"message\": sentence}.",
    },
    "security": [{"bearer": []}, {"cronSecret": []}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the CRON_SECRET (Vercel Cron sends it)"},
            "cronSecret": {"type": "apiKey", "in": "header", "name": "X-Cron-Secret"},
            "qstash": {"type": "apiKey", "in": "header", "name": "Upstash-Signature",
                       "description": "/process-pending only: Upstash QStash's JWT (HS256 with "
                                      "QSTASH_CURRENT_SIGNING_KEY or QSTASH_NEXT_SIGNING_KEY; iss, sub = the URL "
                                      "called, exp/nbf, body = base64url SHA-256 of the body; a jti once)"},
            "googleOidc": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "/process-pending only: a Google ID token (Cloud Scheduler, Cloud Tasks): "
                                          "RS256 by Google's keys (GOOGLE_OIDC_JWKS_URL), aud = "
                                          "GOOGLE_OIDC_AUDIENCE, email in GOOGLE_OIDC_ALLOWED_EMAILS, verified"},
            "hmacTimestamp": {"type": "apiKey", "in": "header", "name": "X-Jobprocessor-Timestamp",
                              "description": "/process-pending only: unix seconds, within 300 s of the server's "
                                             "clock"},
            "hmacSignature": {"type": "apiKey", "in": "header", "name": "X-Jobprocessor-Signature",
                              "description": "/process-pending only: sha256=<hex HMAC-SHA256(TRIGGER_HMAC_SECRET, "
                                             "timestamp + \".\" + raw body)>; each signature once"},
        },
    },
}


# Every operation refuses an unknown query parameter (and a body field it does not take) with a 400 naming it
_UNKNOWN = _error("An unknown query parameter or body field (the message and `field` name it).")
for _item in _PATHS.values():
    for _operation in _item.values():
        _operation["responses"].setdefault("400", _UNKNOWN)
        for _parameter in _operation.get("parameters", []):
            if _parameter["in"] == "query":  # `?limit=` means the default, `?type=` no filter
                _parameter["allowEmptyValue"] = True


# A new job's optional fields may be null, which the app reads as "not given" (the default), as Python's enqueue()
for _name, _schema in SPEC["components"]["schemas"]["NewJob"]["properties"].items():
    if _name != "type":
        SPEC["components"]["schemas"]["NewJob"]["properties"][_name] = {**_schema, "nullable": True}


def spec(job_types: list[str] | None = None) -> dict:
    """The document; with `job_types`, `type` in a new job and in /process-pending lists exactly the job types
    this app has handlers for (any other is a 422), so a client, or a fuzzer, knows what it may enqueue."""
    document = deepcopy(SPEC)
    if job_types:
        document["components"]["schemas"]["NewJob"]["properties"]["type"]["enum"] = list(job_types)
        document["components"]["schemas"]["NewCallback"]["properties"]["type"]["enum"] = list(job_types)
        document["components"]["schemas"]["RunParameters"]["properties"]["type"]["enum"] = list(job_types)
        for operation in document["paths"]["/process-pending"].values():
            for parameter in operation["parameters"]:
                if parameter["name"] == "type":
                    parameter["schema"]["enum"] = list(job_types)
    return document


@bp.get("/openapi.json")
@require_secret
@accepts()
def openapi_json():
    return jsonify(spec(registered_types()))
