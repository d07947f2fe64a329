"""The platform's one JSON encoder: orjson, with the standard library for what orjson refuses.

Every answer body, every stored task definition and every ``runs`` array is encoded several
times per request; orjson does that several times faster than ``json``'s encoder. orjson refuses
integers beyond 64 bits, which a task definition may carry (``json.loads`` accepts any integer,
and upstream's JavaScript keeps them as numbers), so those few documents fall back to ``json``.
Both write compact JSON (no spaces); orjson writes non-ASCII characters as UTF-8 instead of
``\\uXXXX`` escapes, which is the same JSON text to any parser.

Decoding stays with ``json`` except where the text is known to be the platform's own
(``loads_own``): orjson turns integers beyond 64 bits into floats, losing digits.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_FALLBACK = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits
        return _FALLBACK(value).encode()


def dumps_text(value: Any) -> str:
    """Compact JSON of ``value`` as text (for TEXT columns)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _FALLBACK(value)


def loads_own(text: str | bytes) -> Any:
    """Parse JSON the platform wrote itself from values it made (no integers beyond 64 bits)."""
    return orjson.loads(text)
