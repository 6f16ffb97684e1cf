"""A local OpenAI-compatible HTTP server for the tests: real HTTP on loopback, the real SDK talking to it through
OPENAI_BASE_URL (http://127.0.0.1:<port>/v1).

It serves POST /v1/chat/completions with structured outputs and enforces its own rate limits the way OpenAI
documents them (platform.openai.com/docs/guides/rate-limits): a requests bucket and a tokens bucket per minute,
each full at start and refilling continuously ("reset" = time until the bucket is back to its initial state);
every response carries x-ratelimit-limit/-remaining/-reset-requests and -tokens, a refused request gets 429 with
Retry-After and OpenAI's error body. Tokens are charged on arrival: the prompt (counted by its own rule, not the
client's) plus the completion it will produce, or, with charge_max_tokens=True, plus max_completion_tokens as
OpenAI's own limiter does.

Behaviour per request is chosen by markers anywhere in the request body (tests put them in a product title):
    [[fake:malformed]]  answer text that is not the promised JSON      [[fake:500]]  a 500 server error
    [[fake:400]]        400 invalid_request_error                       [[fake:refuse]]  a refusal
    [[fake:truncate]]   finish_reason "length"                          [[fake:slow=S]]  S seconds latency
and for everyone by attributes: latency_s (a number or a (lo, hi) range), storm_until (monotonic time: every
request until then is a 429), down (close connections without answering).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from jobprocessor.ratelimit.headers import format_duration

_MARKER = re.compile(r"\[\[fake:([a-z0-9]+)(?:=([0-9.]+))?\]\]")
_WORDS = re.compile(r"\w+|[^\w\s]")


@dataclass
class Call:
    at: float  # time.time() on arrival
    status: int
    job_id: Optional[int]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    limited_by: Optional[str] = None  # 429: "requests" or "tokens" (or "storm")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Bucket:
    """OpenAI's per-minute limit as a bucket: `limit` units, full at start, refilled at limit/60 per second.
    `capacity` other than the limit: a stricter server (for tests that must see it run dry quickly)."""

    def __init__(self, limit: int, capacity: Optional[float] = None):
        self.limit, self.rate = limit, limit / 60.0
        self.capacity = float(limit if capacity is None else capacity)
        self.level, self.at = self.capacity, time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, units: float) -> float:
        return max(0.0, (units - self.level) / self.rate)

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


def count_tokens(text: str) -> int:
    """The fake's own token count: words and punctuation marks (a different rule from the client's estimate)."""
    return len(_WORDS.findall(text))


class FakeOpenAI:
    def __init__(self, *, rpm: int = 10_000, tpm: int = 10_000_000, latency_s=0.0, api_key: str = "sk-test-key-123456",
                 reasoning_tokens: int = 32, charge_max_tokens: bool = False, retry_after_ms: bool = False,
                 request_capacity: Optional[float] = None, token_capacity: Optional[float] = None):
        self.rpm, self.tpm, self.latency_s, self.api_key = rpm, tpm, latency_s, api_key
        self.reasoning_tokens, self.charge_max_tokens, self.retry_after_ms = reasoning_tokens, charge_max_tokens, \
            retry_after_ms
        self.requests, self.tokens = Bucket(rpm, request_capacity), Bucket(tpm, token_capacity)
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.bodies: list[dict] = []  # every well-formed request body, in arrival order
        self.storm_until = 0.0
        self.down = False
        self.server: Optional[ThreadingHTTPServer] = None
        self.thread: Optional[threading.Thread] = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_state = fake

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # socketserver's default listen backlog of 5 refuses bursts of connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-openai", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what happened ----------------------------------------------------------------------------------------------

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def count(self, status: int) -> int:
        return sum(1 for c in self.snapshot() if c.status == status)

    def max_in_window(self, window_s: float = 60.0, status: int = 200) -> int:
        """Most accepted requests in any `window_s` seconds."""
        times = sorted(c.at for c in self.snapshot() if c.status == status)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- the API ----------------------------------------------------------------------------------------------------

    def _latency(self, markers: dict) -> float:
        if "slow" in markers:
            return float(markers["slow"] or 1)
        if isinstance(self.latency_s, tuple):
            return random.uniform(*self.latency_s)
        return float(self.latency_s)

    def rate_headers(self) -> dict:
        """Under self.lock, after the buckets were refilled."""
        return {
            "x-ratelimit-limit-requests": str(int(self.requests.capacity)),
            "x-ratelimit-limit-tokens": str(int(self.tokens.capacity)),
            "x-ratelimit-remaining-requests": str(max(0, math.floor(self.requests.level))),
            "x-ratelimit-remaining-tokens": str(max(0, math.floor(self.tokens.level))),
            "x-ratelimit-reset-requests": format_duration(self.requests.reset_s()),
            "x-ratelimit-reset-tokens": format_duration(self.tokens.reset_s()),
        }

    def admit(self, body: dict, raw: str, job_id: Optional[int]) -> tuple[int, dict, dict, float]:
        """Decide one request: (status, headers, response body, latency)."""
        markers = {m.group(1): m.group(2) for m in _MARKER.finditer(raw)}
        prompt = count_tokens(raw)
        completion, content, finish = self._completion(body, markers)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or completion)
        charge = prompt + (max_tokens if self.charge_max_tokens else completion)
        now = time.monotonic()
        with self.lock:
            self.bodies.append(body)
            self.requests.refill(now)
            self.tokens.refill(now)
            limited_by, wait = None, 0.0
            if now < self.storm_until:
                limited_by, wait = "storm", self.storm_until - now
            elif self.requests.level < 1:
                limited_by, wait = "requests", self.requests.wait_for(1)
            elif self.tokens.level < charge:
                limited_by, wait = "tokens", self.tokens.wait_for(charge)
            else:
                self.requests.level -= 1
                self.tokens.level -= charge
            headers = self.rate_headers()
            if limited_by is not None:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                if self.retry_after_ms:
                    headers["retry-after-ms"] = str(int(wait * 1000))
                self.calls.append(Call(time.time(), 429, job_id, limited_by=limited_by))
                kind = "requests" if limited_by in ("requests", "storm") else "tokens"
                used = self.rpm - max(0, math.floor(self.requests.level)) if kind == "requests" else \
                    self.tpm - max(0, math.floor(self.tokens.level))
                message = (f"Rate limit reached for {body.get('model')} in organization org-fake on {kind} per min "
                           f"({'RPM' if kind == 'requests' else 'TPM'}): Limit "
                           f"{self.rpm if kind == 'requests' else self.tpm}, Used {used}, Requested "
                           f"{1 if kind == 'requests' else charge}. Please try again in {format_duration(wait)}. "
                           "Visit https://platform.openai.com/account/rate-limits to learn more.")
                return 429, headers, _error(message, kind, "rate_limit_exceeded"), 0.0
        latency = self._latency(markers)
        if "500" in markers:
            self._log(Call(time.time(), 500, job_id))
            return 500, headers, _error("The server had an error while processing your request. Sorry about that!",
                                        "server_error", None), latency
        if "400" in markers:
            self._log(Call(time.time(), 400, job_id))
            return 400, headers, _error("Invalid 'messages[1].content': the fake was asked to refuse it.",
                                        "invalid_request_error", "invalid_value"), latency
        self._log(Call(time.time(), 200, job_id, prompt, completion))
        message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if "refuse" in markers:
            message.update(content=None, refusal="I'm sorry, I can't help with that.")
        response = {
            "id": f"chatcmpl-fake{random.getrandbits(48):x}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model"), "service_tier": "default",
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
        }
        return 200, headers, response, latency

    def _log(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def _completion(self, body: dict, markers: dict) -> tuple[int, str, str]:
        """The answer: every field of the requested JSON schema filled from a digest of the request."""
        digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:8]
        schema = (((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {})
        answer = {}
        for name, spec in (schema.get("properties") or {}).items():
            if spec.get("type") == "array":
                answer[name] = [f"{name}-{digest}-{i}" for i in range(3)]
            else:
                answer[name] = f"Optimised {name.replace('_', ' ')} {digest}"
        content = json.dumps(answer)
        finish = "stop"
        if "malformed" in markers:
            content = "Sure! Here is your product: " + content[: len(content) // 2]
        if "truncate" in markers:
            content, finish = content[: len(content) // 2], "length"
        return count_tokens(content) + self.reasoning_tokens, content, finish


def _error(message: str, kind: str, code: Optional[str]) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server_state: FakeOpenAI

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, headers: dict, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fake{random.getrandbits(48):x}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        if fake.down:
            self.close_connection = True
            self.connection.close()
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, {}, _error(f"Invalid URL (POST {self.path})", "invalid_request_error", None))
            return
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            presented = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            fake._log(Call(time.time(), 401, None))
            # worse than OpenAI, which masks the key: echo it whole, so the tests prove the client redacts it
            self._send(401, {}, _error(f"Incorrect API key provided: {presented}.", "invalid_request_error",
                                       "invalid_api_key"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, {}, _error("We could not parse the JSON body of your request.",
                                       "invalid_request_error", None))
            return
        problem = _invalid(body)
        if problem:
            self._send(400, {}, _error(problem, "invalid_request_error", "invalid_value"))
            return
        match = re.match(r"jobprocessor-(\d+)-", self.headers.get("X-Client-Request-Id") or "")
        status, headers, response, latency = fake.admit(body, raw, int(match.group(1)) if match else None)
        if latency > 0:
            time.sleep(latency)
        try:
            self._send(status, headers, response)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


def _invalid(body: dict) -> Optional[str]:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and m.get("role")
                                                                 for m in messages):
        return "Invalid 'messages': expected a non-empty array of messages."
    response_format = body.get("response_format")
    if response_format is not None:
        schema = (response_format.get("json_schema") or {}).get("schema")
        if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
            return "Invalid 'response_format': expected a json_schema."
        if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != \
                set(schema.get("properties", {})):
            return "Invalid schema for response_format: strict mode needs every property required and " \
                   "additionalProperties false."
    return None
