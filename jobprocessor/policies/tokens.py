"""What one chat request counts against OpenAI's tokens per minute, computed before the call. Pure.

OpenAI's rule (platform.openai.com/docs/guides/rate-limits, "Reduce the max_tokens to match the size of your
completions"): a request is counted when it arrives, as the larger of its max_tokens (max_completion_tokens) and an
estimate of its input from its character count, and nothing is given back when the answer is shorter. The shared
limiter reserves exactly that (ratelimit/core.py) and never settles the difference, so it counts what the server
counts: a request fits our budget when, and only when, it fits the server's.

    input characters = for every message: its role, its name if any, its content (a string, or the text of each
                       content part); plus response_format and tools, each as compact JSON
    charge           = max(max_output_tokens, ceil(input characters / 4))

Which characters is our reading of "the character count of your request", chosen on the generous side so the
charge is never below the server's for our own requests: the framing (roles) and the structured-output schema are
counted too, since the model reads them; the schema is counted as the compact JSON that is sent. Characters are
Unicode code points (what "characters" means for text). Should a server count more, its x-ratelimit-remaining-tokens
header says so, and the limiter believes the lower figure (ratelimit/core.observe).
tests/support/fake_openai.py implements the same rule independently, from the request body it receives; the tests
compare the two numbers.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Optional

CHARS_PER_TOKEN = 4


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return sum(len(part.get("text") or "") for part in content if isinstance(part, Mapping))
    return 0 if content is None else len(_compact(content))


def input_chars(messages: Iterable[Mapping[str, Any]], response_format: Optional[Mapping[str, Any]] = None,
                tools: Optional[list] = None) -> int:
    """The characters of a request's input, as the module docstring defines them."""
    total = 0
    for message in messages:
        total += len(str(message.get("role") or "")) + len(str(message.get("name") or ""))
        total += _content_chars(message.get("content"))
    for extra in (response_format, tools):
        if extra is not None:
            total += len(_compact(extra))
    return total


def call_charge(messages: Iterable[Mapping[str, Any]], max_output_tokens: int,
                response_format: Optional[Mapping[str, Any]] = None, tools: Optional[list] = None) -> int:
    """Tokens one request counts against tokens/min when it arrives: the larger of its output cap and its input
    estimate. Reserved before the call, never given back."""
    estimate = math.ceil(input_chars(messages, response_format, tools) / CHARS_PER_TOKEN)
    return max(max(0, int(max_output_tokens)), estimate)
