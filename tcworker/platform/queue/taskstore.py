"""SQL for tasks, runs and dependencies; every function runs on the database thread.

Each function takes the open connection and is called inside one transaction by
``Database.run``. Writes are compare-and-set on the row's ``version`` column.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from tcworker.platform import jsonwire
from tcworker.platform.clock import json_ms
from tcworker.platform.errors import InternalServerError
from tcworker.platform.index.service import index_routes
from tcworker.platform.queue import statemachine
from tcworker.platform.store.models import PRIORITY_RANK, TaskRecord

PRIORITY_OF_RANK = {rank: name for name, rank in PRIORITY_RANK.items()}

_ENCODE = jsonwire.dumps_text


class PendingOrder:
    """FIFO key for runs becoming pending: nanosecond clock, forced strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


def load(conn: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    row = conn.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else TaskRecord.from_row(row)


_STATUS_COLUMNS = (
    "SELECT task_id, task_queue_id, scheduler_id, project_id, task_group_id, priority, deadline_ms,"
    " expires_ms, retries_left, state, runs FROM tasks WHERE task_id = ?"
)


def load_status(conn: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    """``TaskRecord.status()`` from the row's columns, without decoding the task definition.

    Workers poll ``status`` about once a second per running task; the definition (payload and
    all) is the largest part of the row and status needs none of it. Every field it shows is a
    column: the queue id splits into provisionerId/workerType (createTask keeps them equal), and
    deadline/expires were stored as exactly the milliseconds of the definition's normalised text.
    """
    row = conn.execute(_STATUS_COLUMNS, (task_id,)).fetchone()
    if row is None:
        return None
    task_queue_id = row["task_queue_id"]
    provisioner_id, _, worker_type = task_queue_id.partition("/")
    return {
        "taskId": row["task_id"],
        "provisionerId": provisioner_id,
        "workerType": worker_type,
        "taskQueueId": task_queue_id,
        "schedulerId": row["scheduler_id"],
        "projectId": row["project_id"],
        "taskGroupId": row["task_group_id"],
        "priority": PRIORITY_OF_RANK[row["priority"]],
        "deadline": json_ms(row["deadline_ms"]),
        "expires": json_ms(row["expires_ms"]),
        "retriesLeft": row["retries_left"],
        "state": row["state"],
        "runs": jsonwire.loads_own(row["runs"]),
    }


def load_many(conn: sqlite3.Connection, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
    found: dict[str, TaskRecord] = {}
    ids = list(task_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM tasks WHERE task_id IN ({marks})", chunk):
            found[row["task_id"]] = TaskRecord.from_row(row)
    return found


def insert(conn: sqlite3.Connection, task: TaskRecord, order: PendingOrder) -> None:
    d = task.definition
    task.definition_text = _ENCODE(d)
    conn.execute(
        "INSERT INTO tasks (task_id, definition, task_queue_id, scheduler_id, project_id, task_group_id,"
        " priority, retries, retries_left, requires, deadline_ms, expires_ms, runs, state, taken_until_ms,"
        " pending_order, version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
        (
            task.task_id,
            task.definition_text,
            d["taskQueueId"],
            d["schedulerId"],
            d["projectId"],
            d["taskGroupId"],
            PRIORITY_RANK[d["priority"]],
            task.retries,
            task.retries_left,
            d["requires"],
            task.deadline_ms,
            task.expires_ms,
            _ENCODE(task.runs),
            task.state,
            task.taken_until_ms,
            order.next() if task.state == "pending" else None,
        ),
    )


def save(conn: sqlite3.Connection, task: TaskRecord, order: PendingOrder, *, requeued: bool) -> None:
    """Compare-and-set write of the mutable columns; ``requeued`` gives a new FIFO position."""
    cur = conn.execute(
        "UPDATE tasks SET runs = ?, state = ?, retries_left = ?, taken_until_ms = ?,"
        " pending_order = CASE WHEN ? THEN ? ELSE pending_order END, version = version + 1"
        " WHERE task_id = ? AND version = ?",
        (
            _ENCODE(task.runs),
            task.state,
            task.retries_left,
            task.taken_until_ms,
            requeued,
            order.next() if requeued else None,
            task.task_id,
            task.version,
        ),
    )
    if cur.rowcount != 1:
        raise InternalServerError(f"concurrent update of task {task.task_id}")
    task.version += 1


def transition(
    conn: sqlite3.Connection, task: TaskRecord, event: str, now_ms: int, order: PendingOrder, **kw: Any
) -> list[str]:
    """Apply one state-machine event, save, settle dependents; returns queues to notify."""
    outcome = statemachine.apply(task, event, now_ms, **kw)
    save(conn, task, order, requeued=outcome.new_pending)
    queues = [task.task_queue_id] if outcome.new_pending else []
    if outcome.resolved:
        if task.state == "completed":
            index_routes(conn, task.task_id, task.definition["routes"], task.expires_ms)
        queues += settle_dependents(conn, task, now_ms, order)
    return queues


def dependency_satisfied(requires: str, state: str) -> bool:
    return state == "completed" or (requires == "all-resolved" and state in statemachine.RESOLVED)


def insert_dependencies(conn: sqlite3.Connection, task: TaskRecord, deps: dict[str, TaskRecord]) -> int:
    """Record the task's dependencies; returns how many are still unsatisfied."""
    requires = task.definition["requires"]
    unsatisfied = 0
    rows = []
    for dep_id in task.definition["dependencies"]:
        dep = deps.get(dep_id)
        ok = dep is not None and dep_id != task.task_id and dependency_satisfied(requires, dep.state)
        unsatisfied += 0 if ok else 1
        rows.append((dep_id, task.task_id, requires, 1 if ok else 0, task.expires_ms))
    if not rows:  # most tasks: no statement at all
        return 0
    conn.executemany(
        "INSERT OR IGNORE INTO task_dependencies (required_task_id, dependent_task_id, requires, satisfied,"
        " expires_ms) VALUES (?,?,?,?,?)",
        rows,
    )
    return unsatisfied


def settle_dependents(
    conn: sqlite3.Connection, task: TaskRecord, now_ms: int, order: PendingOrder
) -> list[str]:
    """After ``task`` resolved: mark it satisfied for its dependents; schedule those now ready."""
    queues: list[str] = []
    rows = conn.execute(
        "SELECT dependent_task_id, requires FROM task_dependencies WHERE required_task_id = ? AND satisfied = 0",
        (task.task_id,),
    ).fetchall()
    for dependent_id, requires in rows:
        if not dependency_satisfied(requires, task.state):
            continue
        conn.execute(
            "UPDATE task_dependencies SET satisfied = 1 WHERE required_task_id = ? AND dependent_task_id = ?",
            (task.task_id, dependent_id),
        )
        left = conn.execute(
            "SELECT COUNT(*) FROM task_dependencies WHERE dependent_task_id = ? AND satisfied = 0",
            (dependent_id,),
        ).fetchone()[0]
        if left:
            continue
        dependent = load(conn, dependent_id)
        if dependent is not None and dependent.state == "unscheduled" and dependent.deadline_ms > now_ms:
            queues += transition(conn, dependent, "schedule", now_ms, order)
    return queues


def claim_pending(
    conn: sqlite3.Connection,
    queue: str,
    worker: tuple[str, str],
    count: int,
    now_ms: int,
    taken_until_ms: int,
    order: PendingOrder,
) -> list[TaskRecord]:
    """Move up to ``count`` pending runs of ``queue`` (priority, then FIFO) to running."""
    rows = conn.execute(
        "SELECT * FROM tasks WHERE task_queue_id = ? AND state = 'pending' AND deadline_ms > ?"
        " ORDER BY priority DESC, pending_order LIMIT ?",
        (queue, now_ms, count),
    ).fetchall()
    claimed = []
    for row in rows:
        task = TaskRecord.from_row(row)
        transition(conn, task, "claim", now_ms, order, worker=worker, taken_until_ms=taken_until_ms)
        claimed.append(task)
    return claimed


def expired_claims(conn: sqlite3.Connection, now_ms: int) -> list[TaskRecord]:
    rows = conn.execute(
        "SELECT * FROM tasks WHERE state = 'running' AND taken_until_ms < ? LIMIT 500", (now_ms,)
    ).fetchall()
    return [TaskRecord.from_row(r) for r in rows]


def past_deadline(conn: sqlite3.Connection, now_ms: int) -> list[TaskRecord]:
    rows = conn.execute(
        "SELECT * FROM tasks WHERE state IN ('unscheduled', 'pending', 'running') AND deadline_ms <= ? LIMIT 500",
        (now_ms,),
    ).fetchall()
    return [TaskRecord.from_row(r) for r in rows]


def page_after(rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Split a ``limit + 1`` row fetch into a page and the continuation key of the next page."""
    if len(rows) > limit:
        return rows[:limit], str(key(rows[limit - 1]))
    return rows, None


def chunked(items: list[str], size: int) -> Iterable[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
