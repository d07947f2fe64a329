"""Durations written the way Go's ``time.Duration.String`` does, as generic-worker logs them.

``1.2ms``, ``10.5ms``, ``1.234s``, ``2m3.5s`` — kept identical so log-scraping tools carry over.
"""

from __future__ import annotations


def _trim(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def go_duration(seconds: float) -> str:
    """Go-style duration text for ``seconds`` (microsecond precision)."""
    if seconds < 0:
        return "-" + go_duration(-seconds)
    micros = round(seconds * 1_000_000)
    if micros == 0:
        return "0s"
    if micros < 1000:
        return f"{micros}µs"
    if micros < 1_000_000:
        return _trim(micros / 1000, 3) + "ms"
    total = micros / 1_000_000
    if total < 60:
        return _trim(total, 6) + "s"
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(int(minutes), 60)
    head = f"{hours}h{minutes}m" if hours else f"{minutes}m"
    return head + _trim(secs, 6) + "s"
