"""The platform's one JSON encoder: orjson, with the standard library for what orjson refuses.

Every answer body, every stored task definition and every ``runs`` array is encoded several
times per request; orjson does that several times faster than ``json``'s encoder. orjson refuses
integers beyond 64 bits, which a task definition may carry (``json.loads`` accepts any integer,
and upstream's JavaScript keeps them as numbers), so those few documents fall back to ``json``.
Both write compact JSON (no spaces); orjson writes non-ASCII characters as UTF-8 instead of
``\\uXXXX`` escapes, which is the same JSON text to any parser.

Decoding: orjson turns integers beyond 64 bits into floats (losing digits) and nests deeper
than ``json`` does, so ``loads_exact`` uses it only for text where neither can happen and says so
otherwise; ``loads_own`` is for text the platform wrote itself from values it made.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_FALLBACK = json.JSONEncoder(separators=(",", ":")).encode
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
#: Fewer brackets than this in the whole text: nested less deeply than either parser's limit.
_FEW_BRACKETS = 900
#: What ``loads_exact`` returns when it cannot decide; the caller parses with ``json``.
UNDECIDED: Any = object()


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


def loads_exact(text: bytes) -> Any:
    """``json.loads(text)`` by orjson when that is sure to give the same value, else ``UNDECIDED``.

    ``UNDECIDED`` for text with a run of 19+ digits (a possible integer beyond 64 bits), with 900+
    brackets (nesting where the two parsers' limits differ), or that orjson refuses (invalid, or
    valid in a form it does not take: UTF-16/32, a byte-order mark): the caller's ``json`` parse
    then decides, with its usual error messages. orjson refuses NaN, Infinity, numbers that
    overflow to infinity and unpaired surrogates, as the platform's request parser does.
    """
    if text.count(b"[") + text.count(b"{") >= _FEW_BRACKETS or _LONG_DIGITS.search(text) is not None:
        return UNDECIDED
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return UNDECIDED


def loads_stored(text: str) -> Any:
    """A JSON column the platform wrote (``dumps_text``) from values a client may have sent."""
    value = loads_exact(text.encode("utf-8", "surrogatepass"))
    return json.loads(text) if value is UNDECIDED else value
