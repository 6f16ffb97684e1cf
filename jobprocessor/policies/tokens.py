"""How many tokens a chat call will count against the per-minute budget, estimated before the call. Pure.

No tokenizer: the exact ones (tiktoken) download their encoding files on first use, and no network is allowed at
run time. The estimate only has to be a little high, never far low, because the limiter reserves it before the
call and settles with the response's real `usage` right after; a high estimate costs budget for the length of one
call, a low one could overshoot for that long.

    text tokens     = max(ceil(ascii_chars / 4), ascii_pieces) + non_ascii_chars
    ascii_pieces    = runs of letters + chunks of up to 3 digits + punctuation/symbol characters (ASCII part)
    message tokens  = sum(text tokens of each message and its role + MESSAGE_OVERHEAD) + REPLY_PRIMING
    response schema = text tokens of its JSON (structured outputs put the schema in the prompt)
    reservation     = message tokens + schema tokens + max_output_tokens

Why two measures: BPE tokenizers average about 4 characters per token on English prose, but product data is JSON
full of quotes, colons, SKUs and numbers, where nearly every punctuation mark is a token of its own and numbers split
into chunks of up to three digits; counting those pieces is then the better (higher) figure, close to or a little
above what a real tokenizer finds. Every non-ASCII character counts as a whole token: CJK text runs about one
token per character, and accented letters inside words cost less, so this errs high. The overheads are the chat
framing OpenAI documents (about 3 tokens per message plus 3 to prime the reply), rounded up. max_output_tokens is
counted whole: the server's own limiter counts a request's max tokens too.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping, Optional

ASCII_CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
_PIECES = re.compile(r"[A-Za-z]+|[0-9]{1,3}|[^\sA-Za-z0-9]")


def text_tokens(text: str) -> int:
    ascii_text = "".join(ch for ch in text if ord(ch) < 128)
    pieces = len(_PIECES.findall(ascii_text))
    return max(math.ceil(len(ascii_text) / ASCII_CHARS_PER_TOKEN), pieces) + (len(text) - len(ascii_text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += MESSAGE_OVERHEAD + text_tokens(_content_text(message.get("content")))
        total += text_tokens(str(message.get("role", "")))
    return total


def estimate_call(messages: Iterable[Mapping[str, Any]], max_output_tokens: int,
                  response_schema: Optional[Mapping[str, Any]] = None) -> int:
    """Tokens to reserve for one chat call: its input (messages and schema) plus its whole output allowance."""
    schema = text_tokens(json.dumps(response_schema, separators=(",", ":"))) if response_schema else 0
    return message_tokens(messages) + schema + max(0, int(max_output_tokens))
