"""Waiting for a condition in tests: a generous bound against hangs, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(predicate: Callable[[], object], timeout: float, poll: float = 0.05) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
