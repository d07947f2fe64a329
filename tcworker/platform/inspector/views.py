"""What the inspector's pages read from the store: task lists, one task, its artifacts.

Every query runs on the platform's own database thread (``Database.read``), never over HTTP, and
each one is bounded: lists are keyset pages in insertion order (the table's ``rowid``, newest
first; the ``tasks_group_newest`` index gives a group's tasks in that order too), so a page costs
the same with ten tasks or a million. The group's per-state counts are kept by triggers in
``task_group_state_counts`` (migration 0005), so reading them costs one row per state however big
the group is (counting the group's tasks grew with it). List rows pull only the few fields a row
shows out of the stored definition (``json_extract`` in SQLite) instead of decoding every
definition in Python.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from tcworker.platform.queue import taskstore
from tcworker.platform.queue.artifacts import Artifact
from tcworker.platform.store.db import Database
from tcworker.platform.store.models import TaskRecord

PAGE_SIZE = 50
MAX_ARTIFACTS = 1000

_LIST_COLUMNS = (
    "rowid AS cursor, task_id, task_group_id, task_queue_id, state, runs,"
    " json_extract(definition, '$.metadata.name') AS name,"
    " json_extract(definition, '$.created') AS created"
)


@dataclass(frozen=True)
class TaskLine:
    """One row of a task list."""

    cursor: int
    task_id: str
    task_group_id: str
    task_queue_id: str
    state: str
    name: str
    created: str
    runs: list[dict[str, Any]]

    @property
    def last_run(self) -> dict[str, Any]:
        return self.runs[-1] if self.runs else {}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskLine:
        return cls(
            cursor=int(row["cursor"]),
            task_id=row["task_id"],
            task_group_id=row["task_group_id"],
            task_queue_id=row["task_queue_id"],
            state=row["state"],
            name=str(row["name"] if row["name"] is not None else ""),
            created=str(row["created"] or ""),
            runs=json.loads(row["runs"]),
        )


@dataclass(frozen=True)
class TaskList:
    """One page of tasks and the cursor of the next (older) page, if there is one."""

    lines: list[TaskLine]
    older: int | None


@dataclass(frozen=True)
class GroupView:
    task_group_id: str
    scheduler_id: str
    expires_ms: int
    sealed_ms: int | None
    state_counts: dict[str, int]
    tasks: TaskList


def _page(rows: list[sqlite3.Row], limit: int) -> TaskList:
    lines = [TaskLine.from_row(r) for r in rows[:limit]]
    return TaskList(lines, lines[-1].cursor if len(rows) > limit and lines else None)


def _before(cursor: int | None) -> int:
    return cursor if cursor is not None else 2**63 - 1


class InspectorViews:
    """Read-only views over the platform's store for the inspector pages."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def front(
        self, before: int | None, limit: int = PAGE_SIZE, groups: int = 10
    ) -> tuple[TaskList, list[str]]:
        """One page of all tasks and the last task groups created, in one trip to the database
        thread (each trip is a thread hand-off, which is what costs most on a busy machine)."""

        def op(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[str]]:
            rows = conn.execute(
                f"SELECT {_LIST_COLUMNS} FROM tasks WHERE rowid < ? ORDER BY rowid DESC LIMIT ?",
                (_before(before), limit + 1),
            ).fetchall()
            recent = conn.execute(
                "SELECT task_group_id FROM task_groups ORDER BY rowid DESC LIMIT ?", (groups,)
            ).fetchall()
            return rows, [str(r[0]) for r in recent]

        rows, recent = await self.db.read(op)
        return _page(rows, limit), recent

    async def group(self, group_id: str, before: int | None, limit: int = PAGE_SIZE) -> GroupView | None:
        def op(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, dict[str, int], list[sqlite3.Row]]:
            group = conn.execute("SELECT * FROM task_groups WHERE task_group_id = ?", (group_id,)).fetchone()
            if group is None:
                return None, {}, []
            counts = {
                str(state): int(n)
                for state, n in conn.execute(
                    "SELECT state, n FROM task_group_state_counts WHERE task_group_id = ? AND n > 0",
                    (group_id,),
                )
            }
            rows = conn.execute(
                f"SELECT {_LIST_COLUMNS} FROM tasks"
                " WHERE task_group_id = ? AND rowid < ? ORDER BY rowid DESC LIMIT ?",
                (group_id, _before(before), limit + 1),
            ).fetchall()
            return group, counts, rows

        group, counts, rows = await self.db.read(op)
        if group is None:
            return None
        return GroupView(
            task_group_id=group["task_group_id"],
            scheduler_id=group["scheduler_id"],
            expires_ms=group["expires_ms"],
            sealed_ms=group["sealed_ms"],
            state_counts=counts,
            tasks=_page(rows, limit),
        )

    async def task(
        self, task_id: str, run: int | None
    ) -> tuple[TaskRecord | None, int | None, list[Artifact]]:
        """The task, the run shown (``run`` if it exists, else the latest; None without runs) and
        every artifact of that run (unfinished uploads too, which the page marks), in one trip."""

        def op(conn: sqlite3.Connection) -> tuple[TaskRecord | None, int | None, list[sqlite3.Row]]:
            task = taskstore.load(conn, task_id)
            if task is None or not task.runs:
                return task, None, []
            run_id = run if run is not None and run < len(task.runs) else len(task.runs) - 1
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE task_id = ? AND run_id = ? ORDER BY name LIMIT ?",
                (task_id, run_id, MAX_ARTIFACTS),
            ).fetchall()
            return task, run_id, rows

        task, run_id, rows = await self.db.read(op)
        return task, run_id, [Artifact.from_row(r) for r in rows]

    async def kind_of(self, task_id: str) -> str | None:
        """``task`` or ``group`` for the search box; None when neither exists."""

        def op(conn: sqlite3.Connection) -> str | None:
            if conn.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone():
                return "task"
            if conn.execute("SELECT 1 FROM task_groups WHERE task_group_id = ?", (task_id,)).fetchone():
                return "group"
            return None

        return await self.db.read(op)
