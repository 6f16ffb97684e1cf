"""A local OpenAI-compatible HTTP server for the tests: real HTTP on loopback, the real SDK talking to it through
OPENAI_BASE_URL (http://127.0.0.1:<port>/v1).

It serves POST /v1/chat/completions with structured outputs and enforces its own rate limits the way OpenAI
documents them (platform.openai.com/docs/guides/rate-limits): a requests bucket and a tokens bucket per minute,
each full at start and refilling continuously ("reset" = time until the bucket is back to its initial state);
every response carries x-ratelimit-limit/-remaining/-reset-requests and -tokens, a refused request gets 429 with
Retry-After and OpenAI's error body. A refused request is not charged.

What a request is charged against tokens/min, on arrival (`accounting=`):
    "openai"      as OpenAI documents it: max(max_completion_tokens (else max_tokens, else the model's whole
                  output, MODEL_MAX_OUTPUT_TOKENS), ceil(input characters / 4)), never given back however short
                  the answer ("Your rate limit is calculated as the maximum of max_tokens and the estimated number
                  of tokens based on the character count of your request").
                  Input characters (openai_input_chars): for every message its role, its name if any and its
                  content (a string, or the "text" of each content part); plus the request's response_format and
                  tools, each as compact JSON (separators "," and ":", non-ASCII kept as characters): structured
                  outputs and tools are put in front of the model too. Characters are Python str characters.
    "usage"       (the default, the fake's first behaviour) the prompt (the fake's own word-and-punctuation count
                  of the whole body) plus the completion it will produce.
    "max_tokens"  (= charge_max_tokens=True) the prompt as above plus max_completion_tokens.
openai_charge(body) is the "openai" rule as a function of a request body (tests compare the limiter with it).

How long answers are: `completion_tokens` (None: the visible JSON's own count plus `reasoning_tokens`; an int; a
(lo, hi) range drawn uniformly per request; or a function of a random.Random) is what an answer NEEDS, reasoning
included; `reasoning_tokens` may be an int or a (lo, hi) range too; `long_answers=(rate, tokens)` makes that share
of answers need `tokens` (an int or a range) instead. An answer that needs more than the request's
max_completion_tokens is cut off there, as the real server does: finish_reason "length", completion_tokens = the
cap, the content a prefix of the JSON (empty when the cap was spent reasoning). `seed` makes the draws repeatable.

Behaviour per request is chosen by markers anywhere in the request body (tests put them in a product title):
    [[fake:malformed]]  answer text that is not the promised JSON      [[fake:500]]  a 500 server error
    [[fake:400]]        400 invalid_request_error                       [[fake:refuse]]  a refusal
    [[fake:truncate]]   finish_reason "length" whatever the cap         [[fake:slow=S]]  S seconds latency
    [[fake:need=N]]     this answer needs N completion tokens (cut off if the cap is lower)
and for everyone by attributes: latency_s (a number or a (lo, hi) range), storm_until (monotonic time: every
request until then is a 429), down (close connections without answering). rate_headers=False leaves out the
x-ratelimit-* headers (429s keep Retry-After): a client must then stay under the limits by its own count.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

from jobprocessor.ratelimit.headers import format_duration

_MARKER = re.compile(r"\[\[fake:([a-z0-9]+)(?:=([0-9.]+))?\]\]")
_WORDS = re.compile(r"\w+|[^\w\s]")

ACCOUNTINGS = ("usage", "max_tokens", "openai")
CHARS_PER_TOKEN = 4  # OpenAI's character-based estimate of a request's input
MODEL_MAX_OUTPUT_TOKENS = 128_000  # what a request that names no cap may produce (gpt-5-mini's output limit)

Tokens = Union[None, int, tuple, Callable[[random.Random], int]]


@dataclass
class Call:
    at: float  # time.time() on arrival
    status: int
    job_id: Optional[int]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    limited_by: Optional[str] = None  # 429: "requests" or "tokens" (or "storm")
    charged: int = 0  # tokens taken from the tokens/min bucket on arrival (0 when refused)
    max_tokens: Optional[int] = None  # the cap the request sent (max_completion_tokens, else max_tokens)
    finish_reason: Optional[str] = None
    needed: int = 0  # completion tokens the answer needed (more than completion_tokens when cut off)

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


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def openai_input_chars(body: dict) -> int:
    """The characters of a chat request's input, as the module docstring defines them."""
    total = 0
    for message in body.get("messages") or []:
        total += len(str(message.get("role") or "")) + len(str(message.get("name") or ""))
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
        elif content is not None:
            total += len(_compact(content))
    for key in ("response_format", "tools"):
        if body.get(key) is not None:
            total += len(_compact(body[key]))
    return total


def request_cap(body: dict) -> Optional[int]:
    """The output cap a request sent: max_completion_tokens, else max_tokens, else None."""
    for key in ("max_completion_tokens", "max_tokens"):
        if body.get(key) is not None:
            return int(body[key])
    return None


def openai_charge(body: dict) -> int:
    """What OpenAI counts against tokens/min for this request, on arrival, never given back."""
    cap = request_cap(body)
    return max(MODEL_MAX_OUTPUT_TOKENS if cap is None else cap,
               math.ceil(openai_input_chars(body) / CHARS_PER_TOKEN))


def _draw(spec: Tokens, rng: random.Random) -> int:
    if callable(spec):
        return max(0, int(spec(rng)))
    if isinstance(spec, tuple):
        lo, hi = spec
        return rng.randint(int(lo), int(hi))
    return max(0, int(spec or 0))


class FakeOpenAI:
    def __init__(self, *, rpm: int = 10_000, tpm: int = 10_000_000, latency_s=0.0, api_key: str = "sk-test-key-123456",
                 reasoning_tokens: Tokens = 32, charge_max_tokens: bool = False, retry_after_ms: bool = False,
                 request_capacity: Optional[float] = None, token_capacity: Optional[float] = None,
                 accounting: Optional[str] = None, completion_tokens: Tokens = None,
                 long_answers: Optional[tuple] = None, seed: Optional[int] = None, rate_headers: bool = True):
        accounting = accounting or ("max_tokens" if charge_max_tokens else "usage")
        if accounting not in ACCOUNTINGS:
            raise ValueError(f"accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
        self.rpm, self.tpm, self.latency_s, self.api_key = rpm, tpm, latency_s, api_key
        self.reasoning_tokens, self.accounting, self.retry_after_ms = reasoning_tokens, accounting, retry_after_ms
        self.completion_tokens, self.long_answers, self.send_rate_headers = completion_tokens, long_answers, \
            rate_headers
        self.rng = random.Random(seed)  # answer sizes (under self.lock)
        # latencies and ids: its own generator, so the fake's threads never touch the global one (hypothesis
        # objects when a server thread still answering a slow request draws from it during a later test)
        self.noise = random.Random(seed)
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

    def charged(self) -> int:
        """Tokens charged against tokens/min so far (every admitted request)."""
        return sum(c.charged for c in self.snapshot())

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
            return self.noise.uniform(*self.latency_s)
        return float(self.latency_s)

    def rate_headers(self) -> dict:
        """Under self.lock, after the buckets were refilled. None with rate_headers=False (a test of the client's
        own count, without the server's help)."""
        if not self.send_rate_headers:
            return {}
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
        cap = request_cap(body)
        completion, content, finish, reasoning, needed = self._completion(body, markers, cap)
        if self.accounting == "openai":
            charge = openai_charge(body)
        elif self.accounting == "max_tokens":
            charge = prompt + (completion if cap is None else cap)
        else:
            charge = prompt + completion
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
            self._log(Call(time.time(), 500, job_id, charged=charge, max_tokens=cap))
            return 500, headers, _error("The server had an error while processing your request. Sorry about that!",
                                        "server_error", None), latency
        if "400" in markers:
            self._log(Call(time.time(), 400, job_id, charged=charge, max_tokens=cap))
            return 400, headers, _error("Invalid 'messages[1].content': the fake was asked to refuse it.",
                                        "invalid_request_error", "invalid_value"), latency
        self._log(Call(time.time(), 200, job_id, prompt, completion, charged=charge, max_tokens=cap,
                       finish_reason=finish, needed=needed))
        message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if "refuse" in markers:
            message.update(content=None, refusal="I'm sorry, I can't help with that.")
        response = {
            "id": f"chatcmpl-fake{self.noise.getrandbits(48):x}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model"), "service_tier": "default",
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
        }
        return 200, headers, response, latency

    def _log(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def _needs(self, visible: int, markers: dict) -> tuple[int, int]:
        """(completion tokens the answer needs, of which reasoning), drawn under self.lock."""
        with self.lock:
            if "need" in markers:
                needed = int(float(markers["need"] or 0))
            elif self.long_answers and self.rng.random() < self.long_answers[0]:
                needed = _draw(self.long_answers[1], self.rng)
            elif self.completion_tokens is not None:
                needed = _draw(self.completion_tokens, self.rng)
            else:
                needed = visible + _draw(self.reasoning_tokens, self.rng)
        return max(needed, visible), max(0, needed - visible)

    def _completion(self, body: dict, markers: dict, cap: Optional[int]) -> tuple[int, str, str, int, int]:
        """The answer: every field of the requested JSON schema filled from a digest of the request.
        Returns (completion_tokens, content, finish_reason, reasoning_tokens, tokens the answer needed)."""
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
        visible = count_tokens(content)
        needed, reasoning = self._needs(visible, markers)
        completion = needed
        if "truncate" in markers:
            content, finish = content[: len(content) // 2], "length"
            completion = needed if cap is None else cap
        elif cap is not None and needed > cap:  # cut off at the cap, as the real server does
            shown = max(0, cap - reasoning)
            content = content[: len(content) * shown // max(1, visible)]
            completion, finish, reasoning = cap, "length", min(reasoning, cap)
        return completion, content, finish, reasoning, needed


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
        self.send_header("x-request-id", f"req_fake{self.server_state.noise.getrandbits(48):x}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # http.server's naming
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
