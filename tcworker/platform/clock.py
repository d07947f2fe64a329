"""Millisecond timestamps for storage, rendered with :mod:`tcworker.tctime` for the wire.

The store keeps times as integer milliseconds since the epoch (cheap to compare in SQL);
the API writes them as ``YYYY-MM-DDTHH:MM:SS.sssZ``.
"""

from __future__ import annotations

import datetime as dt
import time

from tcworker import tctime


def now_ms() -> int:
    return int(time.time() * 1000)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def to_ms(t: dt.datetime) -> int:
    """Exact integer milliseconds (sub-millisecond digits are truncated, as JavaScript does)."""
    return (t - _EPOCH) // _MS


def from_ms(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


#: 10000-01-01T00:00:00Z: the fast paths below cover the years 1970..9999 that datetime can hold.
_YEAR_10000_MS = 253402300800000


#: Formatted whole seconds: a request's timestamps mostly fall in a few seconds (now, now +
#: the claim timeout, the task's deadline), so most ``json_ms`` calls need no ``strftime``.
_SECOND_TEXT: dict[int, str] = {}
_SECOND_TEXT_LIMIT = 4096


def json_ms(ms: int) -> str:
    """Wire form of a millisecond timestamp (the same text as ``tctime.to_json``).

    Several per request (run timestamps, takenUntil, created/deadline/expires): ``gmtime`` and one
    ``strftime`` cost half of building two datetimes and formatting through them, and the
    formatted second is kept for the next timestamp in the same second.
    """
    if 0 <= ms < _YEAR_10000_MS:
        seconds, millis = divmod(ms, 1000)
        text = _SECOND_TEXT.get(seconds)
        if text is None:
            if len(_SECOND_TEXT) >= _SECOND_TEXT_LIMIT:
                _SECOND_TEXT.clear()
            text = _SECOND_TEXT[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{text}.{millis:03d}Z"
    return tctime.to_json(from_ms(ms))


def parse_ms(value: str) -> int:
    """Milliseconds of any RFC 3339 timestamp (callers validated the format already)."""
    return to_ms(tctime.parse(value))


def unix_seconds(ms: int) -> str:
    """``1700000000.123`` — how JS prints ``getTime() / 1000`` (no trailing zeros)."""
    whole, frac = divmod(ms, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
