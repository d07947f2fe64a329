"""createTask bodies and the small values around them (queue ids, timestamps), for every test area.

``task_def`` is the one minimal valid task body: the platform tests take it as it is (no
``expires``, so the platform's default is what they check), the superseding tests add a payload
and an expiry. Tests that share one platform isolate themselves with ``new_queue_id``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import slugid
import taskcluster


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def from_now(**delta: float) -> str:
    """``taskcluster.stringDate`` of now + ``timedelta(**delta)``."""
    return taskcluster.stringDate(utcnow() + dt.timedelta(**delta))


def new_queue_id(prefix: str = "tcw-test") -> str:
    """A taskQueueId nobody else uses, so tests can share one server without seeing each other's work."""
    return f"{prefix}/q{slugid.nice().lower().replace('_', '').replace('-', '')[:20]}"


def task_def(queue_id: str, payload: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A minimal valid createTask body for ``queue_id``; keyword arguments override fields."""
    now = utcnow()
    body: dict[str, Any] = {
        "taskQueueId": queue_id,
        "created": taskcluster.stringDate(now),
        "deadline": taskcluster.stringDate(now + dt.timedelta(hours=1)),
        "payload": payload if payload is not None else {},
        "metadata": {
            "name": "tcworker test task",
            "description": "created by tcworker's tests",
            "owner": "tests@example.com",
            "source": "https://example.com/tcworker/tests",
        },
    }
    body.update(overrides)
    return body
