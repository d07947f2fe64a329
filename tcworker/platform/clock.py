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


def json_ms(ms: int) -> str:
    """Wire form of a millisecond timestamp (the same text as ``tctime.to_json``).

    Several per request (run timestamps, takenUntil, created/deadline/expires): ``gmtime`` and one
    ``strftime`` cost half of building two datetimes and formatting through them.
    """
    if 0 <= ms < _YEAR_10000_MS:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    return tctime.to_json(from_ms(ms))


def parse_ms(value: str) -> int:
    """Milliseconds of any RFC 3339 timestamp (callers validated the format already)."""
    return to_ms(tctime.parse(value))


def unix_seconds(ms: int) -> str:
    """``1700000000.123`` — how JS prints ``getTime() / 1000`` (no trailing zeros)."""
    whole, frac = divmod(ms, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
