"""Checks on JSON text about to be stored as jsonb (payloads, results).

PostgreSQL's jsonb cannot hold the NUL character. json.dumps writes a NUL as the escape \\u0000; a string that
holds the six characters backslash-u-0-0-0-0 is written \\\\u0000 (the backslash escaped) and is fine text, so the
escape only counts when an even number of backslashes (none, or escaped ones) stands before it.
"""
from __future__ import annotations

import re

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(document: str) -> bool:
    """Whether JSON text (as json.dumps writes it) holds a real NUL character."""
    return "\\u0000" in document and _NUL_ESCAPE.search(document) is not None
