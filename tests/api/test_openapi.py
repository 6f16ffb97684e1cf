"""GET /openapi.json describes the whole contract, matches the app's routes, and schemathesis, generating valid and
invalid requests from it against the live app (Flask's WSGI interface, real PostgreSQL), finds no 5xx, only JSON
errors with a message, and responses that match the description.

Scope of the generated requests: the operations this app serves. Endpoints of the contract that other parts of
the project build (GET /batches/<id>, /queue/health, /rate-limiter/stats, /metrics) are described already; each is
fuzzed as soon as the app routes it (see implemented_operations), with no change here.
"""
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from jobprocessor.api.openapi import spec
from jobprocessor.handlers import registered_types
from tests.support.settings import AUTH, ROOT, SECRET

# every endpoint users are told of, as (method, OpenAPI path): the rows of the README's "HTTP API" table
# (test_the_readme_lists_every_endpoint holds the two together)
README_ENDPOINTS = {
    ("post", "/process-pending"), ("get", "/process-pending"),
    ("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}"),
    ("post", "/jobs/{job_id}/retry"), ("post", "/jobs/{job_id}/cancel"),
    ("get", "/batches/{batch_id}"), ("get", "/queue/health"), ("get", "/rate-limiter/stats"),
    ("get", "/metrics"), ("get", "/healthz"), ("get", "/openapi.json"), ("get", "/ticks"),
    ("post", "/jobs/bulk"),
    ("post", "/pauses"), ("get", "/pauses"), ("delete", "/pauses/{pause_id}"),
    ("put", "/limits"), ("get", "/limits"), ("delete", "/limits"), ("get", "/jobs/{job_id}/wait"),
}


def _template(path: str) -> str:
    """/jobs/<raw_id>/retry and /jobs/{job_id}/retry both -> /jobs/{}/retry."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def served_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):  # HTML pages, not the API
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), _template(rule.rule)))
    return routes


def implemented_operations(app) -> set[tuple[str, str]]:
    served = served_routes(app)
    return {(method, path) for method, path in README_ENDPOINTS if (method, _template(path)) in served}


def test_the_description_needs_the_secret_and_is_the_document(client):
    anonymous = client.get("/openapi.json")
    assert anonymous.status_code == 401 and anonymous.json["error"] == "unauthorized"
    served = client.get("/openapi.json", headers=AUTH)
    assert served.status_code == 200 and served.mimetype == "application/json"
    assert served.json == spec(registered_types())
    assert "test.echo" in served.json["components"]["schemas"]["NewJob"]["properties"]["type"]["enum"]
    assert SECRET not in served.get_data(as_text=True)


def test_every_readme_endpoint_is_described():
    document = spec()
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == README_ENDPOINTS
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and operation["operationId"]
            if path != "/healthz":  # every protected operation documents the 401 and the 503
                assert {"401", "503"} <= set(operation["responses"]), (method, path)


def readme_endpoints() -> set[tuple[str, str]]:
    """(method, path template) of each row of the README's "HTTP API" table: `| `GET /jobs/<id>` | ... |`, and
    `(also `GET`)` for a second method."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    found = set()
    for method, path, also in re.findall(r"^\| `(GET|POST|PUT|DELETE) (/\S*)`( \(also `GET`\))? \|", section, re.M):
        found.add((method.lower(), _template(path)))
        if also:
            found.add(("get", _template(path)))
    return found


def test_the_readme_lists_every_endpoint():
    assert readme_endpoints() == {(method, _template(path)) for method, path in README_ENDPOINTS}


def test_every_route_the_app_serves_is_described(app):
    described = {(method, _template(path)) for path, item in spec()["paths"].items() for method in item}
    assert served_routes(app) <= described, served_routes(app) - described


def test_the_document_is_valid_openapi(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, headers=AUTH)
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    labels = {result.ok().label for result in schemathesis.openapi.from_dict(spec()).get_all_operations()}
    assert labels == {f"{method.upper()} {path}" for method, path in README_ENDPOINTS}
    broken = spec()
    del broken["paths"]["/jobs"]["get"]["responses"]  # the same check refuses a document that is not valid
    with pytest.raises(Exception):
        schemathesis.openapi.from_dict(broken).validate()


# --- schemathesis against the live app ------------------------------------------------------------------------------

@schemathesis.check
def json_error_with_message(ctx, response, case):
    """Every 4xx and 5xx is {"error": code, "message": sentence} as JSON, and no answer ever holds the secret."""
    if SECRET in response.text:
        raise AssertionError("the response contains the secret")
    if response.status_code >= 400:
        body = response.json()
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
                and isinstance(body.get("message"), str) and body["message"]):
            raise AssertionError(f"{response.status_code} is not a JSON error with a message: {response.text!r}")


# 422s for rules JSON Schema cannot state, each named in the document: a job type's own payload rule
# (product.optimize needs a product with text to rewrite), and the workflow fields' references and combinations (a
# parent id that does not exist, a reference to a later job, debounce_s without singleton_key, ...)
UNSTATABLE_RULES = ("invalid_payload", "unknown_parent", "unknown_batch", "invalid_reference", "invalid_combination",
                    "too_many_parents")


def schema_valid_requests_accepted(ctx, response, case):  # not @schemathesis.check: that would apply it to all

    """schemathesis' positive_data_acceptance, but for the cases JSON Schema cannot state (UNSTATABLE_RULES),
    answered 422 with their code, as the document says. Any other 4xx to schema-valid data is a failure."""
    status = response.status_code
    if 400 <= status < 500 and status not in (401, 403, 404, 409, 429):
        if not (status == 422 and response.json().get("error") in UNSTATABLE_RULES):
            raise AssertionError(f"schema-valid request rejected with {status}: {response.text[:300]}")


def sent_as_generated(case) -> bool:
    """Whether the query string carries the generated values as they are: a list or an object as a query value is
    sent as repeated keys, or not at all when empty (so the invalid value never reaches the app, and
    negative_data_rejection would blame the app for what schemathesis left out: its known false positives)."""
    query = case.query if isinstance(case.query, dict) else {}
    return all(isinstance(value, (str, int, float)) for value in query.values())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("method,path", sorted(README_ENDPOINTS), ids=lambda v: v)
def test_generated_requests_get_no_5xx_and_only_json_errors(app, method, path, mode):
    if (method, path) not in implemented_operations(app):
        pytest.skip(f"{method.upper()} {path} is in the contract but not served by this app yet")
    app.config["TESTING"] = False  # the error handlers answer as in production (a JSON 500, not a traceback)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, headers=AUTH)
    # valid data holds no NUL: JSON Schema cannot say "no NUL anywhere in a payload"; NUL is tested on its own
    schema.config.generation.update(allow_x00=False)
    operation = schema[path][method.upper()]
    described = spec()["paths"][path][method]
    if mode is GenerationMode.NEGATIVE and not described.get("parameters") and "requestBody" not in described:
        pytest.skip("no parameters or body to make invalid")

    # schemathesis.pytest.from_fixture does not run under pytest 9; hypothesis drives the same strategies
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # negative_data_rejection is on: whatever the description says is invalid, the app refuses (an empty
        # query value, which means the default, is described with allowEmptyValue; unknown keys are a 400)
        positive = mode is GenerationMode.POSITIVE
        excluded = [positive_data_acceptance]
        if not sent_as_generated(case):
            excluded.append(negative_data_rejection)
        case.call_and_validate(
            headers=AUTH,
            additional_checks=[json_error_with_message] + ([schema_valid_requests_accepted] if positive else []),
            excluded_checks=excluded)

    check()
