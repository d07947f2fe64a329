"""Rows ↔ API shapes for tasks (Taskcluster's ``data.js``: fromDb / status()).

A task row keeps the canonical definition and the ``runs`` array as JSON text, plus the few
columns the hot queries filter on (state, queue, priority, takenUntil, deadline).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from tcworker.platform import jsonwire

PRIORITIES = ("highest", "very-high", "high", "medium", "low", "very-low", "lowest")
PRIORITY_RANK = {p: len(PRIORITIES) - i for i, p in enumerate(PRIORITIES)}


@dataclass
class TaskRecord:
    """One task as the queue works on it; ``version`` is the compare-and-set token."""

    task_id: str
    definition: dict[str, Any]
    retries: int
    retries_left: int
    deadline_ms: int
    expires_ms: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    state: str = "unscheduled"
    taken_until_ms: int | None = None
    version: int = 0
    definition_text: str = ""

    @property
    def task_queue_id(self) -> str:
        return str(self.definition["taskQueueId"])

    def refresh(self, taken_until_ms: int | None) -> None:
        """Recompute the derived columns after ``runs`` changed."""
        self.state = self.runs[-1]["state"] if self.runs else "unscheduled"
        self.taken_until_ms = taken_until_ms if self.state == "running" else None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRecord:
        return cls(
            task_id=row["task_id"],
            definition=jsonwire.loads_stored(row["definition"]),
            retries=row["retries"],
            retries_left=row["retries_left"],
            deadline_ms=row["deadline_ms"],
            expires_ms=row["expires_ms"],
            runs=jsonwire.loads_own(row["runs"]),  # only the queue's own values: no big integers
            state=row["state"],
            taken_until_ms=row["taken_until_ms"],
            version=row["version"],
            definition_text=row["definition"],
        )

    def status(self) -> dict[str, Any]:
        d = self.definition
        return {
            "taskId": self.task_id,
            "provisionerId": d["provisionerId"],
            "workerType": d["workerType"],
            "taskQueueId": d["taskQueueId"],
            "schedulerId": d["schedulerId"],
            "projectId": d["projectId"],
            "taskGroupId": d["taskGroupId"],
            "priority": d["priority"],
            "deadline": d["deadline"],
            "expires": d["expires"],
            "retriesLeft": self.retries_left,
            "state": self.state,
            "runs": self.runs,
        }


TASK_KEYS = (
    "provisionerId",
    "workerType",
    "taskQueueId",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "requires",
    "routes",
    "priority",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
)


def canonical(d: dict[str, Any]) -> dict[str, Any]:
    """The stored task definition: every field, in task.json's order."""
    return {k: d[k] for k in TASK_KEYS if k in d}
