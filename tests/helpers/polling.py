"""Waiting for a condition in tests: a generous bound against hangs, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def eventually(predicate: Callable[[], object], timeout: float, poll: float = 0.05) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "condition", poll: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns a truthy value (returned); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
