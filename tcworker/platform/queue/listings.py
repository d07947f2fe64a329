"""Read-only queue views: counts, task groups, dependents, batched task/status lookups (§2.6.13)."""

from __future__ import annotations

import sqlite3
from typing import Any

from tcworker.platform.clock import json_ms, now_ms
from tcworker.platform.errors import RequestConflict, ResourceNotFound
from tcworker.platform.queue import taskstore
from tcworker.platform.store.db import Database
from tcworker.platform.store.models import TaskRecord


def _group_info(row: sqlite3.Row) -> dict[str, Any]:
    info = {
        "taskGroupId": row["task_group_id"],
        "schedulerId": row["scheduler_id"],
        "expires": json_ms(row["expires_ms"]),
    }
    if row["sealed_ms"] is not None:
        info["sealed"] = json_ms(row["sealed_ms"])
    return info


def _group_row(conn: sqlite3.Connection, group_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM task_groups WHERE task_group_id = ?", (group_id,)
    ).fetchone()
    if row is None:
        raise ResourceNotFound(f"task group {group_id} not found")
    return row


class Listings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def pending_by_queue(self) -> dict[str, int]:
        """Pending tasks of every task queue that has any (the platform's /metrics gauge)."""

        def op(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT task_queue_id, COUNT(*) FROM tasks WHERE state = 'pending' GROUP BY task_queue_id"
            ).fetchall()
            return {row[0]: row[1] for row in rows}

        return await self.db.read(op)

    async def counts(self, queue: str) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            # Two queries so each can use its partial index (tasks_pending, tasks_claimed).
            pending = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE task_queue_id = ? AND state = 'pending'", (queue,)
            ).fetchone()[0]
            running = conn.execute(
                "SELECT COUNT(*) FROM tasks INDEXED BY tasks_claimed WHERE state = 'running' AND task_queue_id = ?",
                (queue,),
            ).fetchone()[0]
            return {"pending": pending, "running": running}

        found = await self.db.read(op)
        prov, _, wt = queue.partition("/")
        return {
            "provisionerId": prov,
            "workerType": wt,
            "taskQueueId": queue,
            "pendingTasks": found.get("pending", 0),
            "claimedTasks": found.get("running", 0),
        }

    async def task_group(self, group_id: str) -> dict[str, Any]:
        return _group_info(await self.db.read(_group_row, group_id))

    async def group_scheduler(self, group_id: str) -> str:
        return str((await self.db.read(_group_row, group_id))["scheduler_id"])

    async def list_task_group(self, group_id: str, after: str | None, limit: int) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
            group = _group_row(conn, group_id)
            rows = conn.execute(
                "SELECT * FROM tasks WHERE task_group_id = ? AND task_id > ? ORDER BY task_id LIMIT ?",
                (group_id, after or "", limit + 1),
            ).fetchall()
            return group, rows

        group, rows = await self.db.read(op)
        page, token = taskstore.page_after(rows, limit, lambda r: r["task_id"])
        answer = {**_group_info(group), "tasks": [_both(TaskRecord.from_row(r)) for r in page]}
        if token is not None:
            answer["continuationToken"] = token
        return answer

    async def seal(self, group_id: str) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> sqlite3.Row:
            _group_row(conn, group_id)
            conn.execute(
                "UPDATE task_groups SET sealed_ms = ? WHERE task_group_id = ? AND sealed_ms IS NULL",
                (now_ms(), group_id),
            )
            return _group_row(conn, group_id)

        return _group_info(await self.db.run(op))

    async def unresolved_in_sealed_group(self, group_id: str) -> tuple[int, list[str]]:
        def op(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            if _group_row(conn, group_id)["sealed_ms"] is None:
                raise RequestConflict(f"task group {group_id} must be sealed before it can be cancelled")
            size = conn.execute("SELECT COUNT(*) FROM tasks WHERE task_group_id = ?", (group_id,)).fetchone()[
                0
            ]
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT task_id FROM tasks WHERE task_group_id = ? AND state IN ('unscheduled','pending','running')",
                    (group_id,),
                )
            ]
            return size, ids

        return await self.db.read(op)

    async def dependents(self, task_id: str, after: str | None, limit: int) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> list[TaskRecord]:
            if taskstore.load(conn, task_id) is None:
                raise ResourceNotFound(f"Task {task_id} not found")
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT dependent_task_id FROM task_dependencies WHERE required_task_id = ? AND dependent_task_id > ?"
                    " ORDER BY dependent_task_id LIMIT ?",
                    (task_id, after or "", limit + 1),
                )
            ]
            found = taskstore.load_many(conn, ids)
            return [found[i] for i in ids if i in found]

        tasks = await self.db.read(op)
        page, token = taskstore.page_after(tasks, limit, lambda t: t.task_id)
        answer: dict[str, Any] = {"taskId": task_id, "tasks": [_both(t) for t in page]}
        if token is not None:
            answer["continuationToken"] = token
        return answer

    async def many(self, task_ids: list[str]) -> dict[str, TaskRecord]:
        return await self.db.read(taskstore.load_many, task_ids)


def _both(task: TaskRecord) -> dict[str, Any]:
    return {"status": task.status(), "task": task.definition}
