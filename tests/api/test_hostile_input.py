"""Hostile input over the Flask test client: values that look like numbers but are not ASCII digits, strings
PostgreSQL cannot store, SQL metacharacters. Every bad input is a 4xx JSON error with a message, never a 500;
every good one is stored byte for byte. (The same over a real gunicorn: test_hostile_http.py.)"""
import json

import pytest
from sqlalchemy import text

from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH, SECRET


def assert_json_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert SECRET not in response.get_data(as_text=True)


# --- numbers that are not numbers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/jobs/%C2%B2",                     # superscript two: str.isdigit() says yes, int() says no
    "/jobs/%D9%A1%D9%A2",               # Arabic-Indic digits: int() would accept them as 12
    "/jobs?after=%C2%B2",
    "/jobs?limit=%E2%91%A0",            # circled digit one
    "/process-pending?limit=%C2%B3",
    "/jobs/" + "9" * 5000,              # more digits than int() converts (Python's 4300-digit limit)
    "/process-pending?limit=" + "1" * 5000,
])
def test_non_ascii_or_absurd_digits_are_400(client, path):
    method = client.post if path.startswith("/process-pending") else client.get
    assert_json_error(method(path, headers=AUTH), 400)


@pytest.mark.parametrize("query", ["limit=1e9", "limit=-1", "limit=0x10", "budget_s=-5", "budget_s=nan",
                                   "budget_s=NaN", "budget_s=-inf", "budget_s=1e400", "limit=%20", "limit=5%00"])
def test_cron_parameters_out_of_range_or_not_numbers(client, query):
    assert_json_error(client.post(f"/process-pending?{query}", headers=AUTH), 400)


@pytest.mark.parametrize("body", [b'{"limit": 1e400}', b'{"budget_s": -Infinity}', b'{"budget_s": 1e400}',
                                  b'{"limit": ' + b"9" * 5000 + b"}"])
def test_cron_json_numbers_out_of_range(client, body):
    assert_json_error(client.post("/process-pending", data=body, content_type="application/json", headers=AUTH),
                      400)


# --- strings PostgreSQL cannot store ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("store_id", "\\ud800"), ("user_id", "x\\udc80y"), ("idempotency_key", "\\udfff"), ("batch_id", "\\ud83d"),
])
def test_lone_surrogates_in_identifiers_are_400(client, engine, field, value):
    body = '{"type": "test.echo", "%s": "%s"}' % (field, value)  # JSON escapes: json.loads makes lone surrogates
    response = client.post("/jobs", data=body, content_type="application/json", headers=AUTH)
    assert_json_error(response, 400)
    assert response.json["field"] == field
    assert fetch_jobs(engine) == []


@pytest.mark.parametrize("payload", ['{"a": "\\ud800"}', '{"\\udc80": 1}', '{"a": [{"b": "ok\\udbff"}]}'])
def test_lone_surrogates_in_payloads_are_400(client, engine, payload):
    body = '{"type": "test.echo", "payload": %s}' % payload
    response = client.post("/jobs", data=body, content_type="application/json", headers=AUTH)
    assert_json_error(response, 400)
    assert response.json["field"] == "payload" and "surrogate" in response.json["message"]
    assert fetch_jobs(engine) == []


def test_a_surrogate_pair_is_a_real_character_and_is_stored(client, engine):
    body = '{"type": "test.echo", "store_id": "\\ud83d\\ude00", "payload": {"e": "\\ud83d\\ude00"}}'
    assert client.post("/jobs", data=body, content_type="application/json", headers=AUTH).status_code == 201
    (job,) = fetch_jobs(engine)
    assert job["store_id"] == "\U0001F600" and job["payload"] == {"e": "\U0001F600"}


@pytest.mark.parametrize("body,content_type,status", [
    (b"\xc3\x28", "application/json", 400),                  # invalid UTF-8
    (b'{"type": "test.echo"}', "text/plain", 415),
    (b'{"type": "test.echo"}', "application/x-www-form-urlencoded", 415),
    (b'{"type": "test.echo"}', "multipart/form-data; boundary=x", 415),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # nested past the parser's recursion limit
    (b'{"type": "test.echo", "payload": {"x": NaN}}', "application/json", 400),
    (b'{"type": "test.echo", "payload": {"x": 1e400}}', "application/json", 400),
    (b'{"type": "test.echo", "payload": {"x": Infinity}}', "application/json", 400),
    (b'{"type": "test.echo"', "application/json", 400),
    (b'"just a string"', "application/json", 400),
    (b"null", "application/json", 400),
])
def test_malformed_enqueue_bodies(client, engine, body, content_type, status):
    assert_json_error(client.post("/jobs", data=body, content_type=content_type, headers=AUTH), status)
    assert fetch_jobs(engine) == []


def test_many_jobs_each_at_the_payload_limit_hit_the_request_limit(client, app):
    settings = app.extensions["jobprocessor"].settings
    job = {"type": "test.echo", "payload": {"blob": "x" * (settings.MAX_PAYLOAD_BYTES - 100)}}
    count = settings.MAX_REQUEST_BYTES // settings.MAX_PAYLOAD_BYTES + 2
    response = client.post("/jobs", json={"jobs": [job] * count}, headers=AUTH)
    assert_json_error(response, 413)


# --- SQL metacharacters -----------------------------------------------------------------------------------------------

NASTY = [
    "'; DROP TABLE jobs; --",
    "' OR '1'='1",
    "\\'; SELECT pg_sleep(10); --",
    '"; DELETE FROM jobs WHERE "1"="1',
    "$1 $2 $$ $tag$ body $tag$",
    "%s %(limit)s %% %",
    ":limit :worker ::jsonb ?",
    "E'\\\\x00' U&'\\0041'",
    "back\\slash\\\\ and \\n not a newline",
    "/* comment */ -- line",
    "tab\tnewline\ncarriage\rbell\x07",
    "ünïcödé 漢字 🙂 \u200b zero-width",
    "}{][,:\"'`",
]


def test_sql_metacharacters_are_stored_byte_for_byte(client, engine):
    jobs = [{"type": "test.echo", "store_id": value, "user_id": value[::-1], "batch_id": f"b{i}{value}",
             "idempotency_key": f"k{i}{value}", "payload": {value: value, "list": [value, {"k": value}]}}
            for i, value in enumerate(NASTY)]
    response = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 201, response.json
    stored = {row["id"]: row for row in fetch_jobs(engine)}
    assert len(stored) == len(NASTY)
    for job_id, sent in zip(response.json["ids"], jobs):
        row = stored[job_id]
        for field in ("store_id", "user_id", "batch_id", "idempotency_key"):
            assert row[field].encode("utf-8") == sent[field].encode("utf-8"), field
        assert json.dumps(row["payload"], sort_keys=True) == json.dumps(sent["payload"], sort_keys=True)
    with engine.connect() as conn:  # the database's own view agrees (not only psycopg2's round trip)
        octets = conn.execute(text("SELECT id, convert_to(store_id, 'UTF8') FROM jobs")).all()
    assert {job_id: bytes(raw) for job_id, raw in octets} == \
        {job_id: sent["store_id"].encode("utf-8") for job_id, sent in zip(response.json["ids"], jobs)}

    # the same strings as filters find exactly their own job, and the table is still all there
    for job_id, sent in zip(response.json["ids"], jobs):
        for name in ("store_id", "batch_id"):
            page = client.get("/jobs", query_string={name: sent[name]}, headers=AUTH).json["jobs"]
            assert [j["id"] for j in page] == [job_id], (name, sent[name])
    # repeating a key made of metacharacters is recognised as the same key
    again = client.post("/jobs", json={"jobs": jobs}, headers=AUTH)
    assert again.status_code == 200 and again.json["ids"] == response.json["ids"]

    # a handler gets the payload as sent and its result is stored as returned
    summary = client.post("/process-pending", json={"limit": 100}, headers=AUTH).json
    assert summary["succeeded"] == len(NASTY)
    assert sorted(summary["stores"]) == sorted(NASTY)
    for row in fetch_jobs(engine):
        assert row["status"] == "completed"
        assert row["result"]["payload"] == row["payload"] and row["result"]["store_id"] == row["store_id"]


def test_metacharacters_in_a_type_filter_are_just_an_unknown_type(client, engine):
    insert_jobs(engine, 3, "test.echo")
    for value in NASTY[:5]:
        response = client.post("/process-pending", query_string={"type": value}, headers=AUTH)
        assert_json_error(response, 422)
        assert client.get("/jobs", query_string={"type": value}, headers=AUTH).json["jobs"] == []
    assert len(fetch_jobs(engine, "status = 'pending'")) == 3


@pytest.mark.parametrize("run_at,utc", [
    ("2030-01-01T00:00:00+21:35", "2029-12-31T02:25:00+00:00"),  # Python allows offsets up to 24 h,
    ("2030-01-01T00:00:00-23:59", "2030-01-01T23:59:00+00:00"),  # PostgreSQL only up to 15:59
    ("2030-01-01T00:00:00+05:30", "2029-12-31T18:30:00+00:00"),
])
def test_run_at_with_any_valid_offset_is_stored_as_its_instant(client, engine, run_at, utc):
    response = client.post("/jobs", json={"type": "test.echo", "run_at": run_at}, headers=AUTH)
    assert response.status_code == 201, response.json
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
                                   " FROM jobs")).scalar_one()
    assert stored + "+00:00" == utc


def test_run_at_that_leaves_the_calendar_in_utc_is_400(client):
    from tests.support.settings import AUTH

    response = client.post("/jobs", json={"type": "test.echo", "run_at": "9999-12-31T23:30:00-05:00"}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "run_at"
