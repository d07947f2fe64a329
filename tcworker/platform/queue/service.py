"""Queue semantics (spec §2): task creation, the run lifecycle, claims and listings.

No aiohttp here: ``routes.py`` parses and authorizes, then calls one method. Every state change
is one transaction on the database thread (``taskstore``); afterwards the claimWork waiters of
every task queue that gained a pending run are notified in-process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from tcworker.platform.clock import json_ms, now_ms, parse_ms
from tcworker.platform.errors import InputError, RequestConflict, ResourceNotFound
from tcworker.platform.queue import statemachine, taskstore
from tcworker.platform.queue.credentials import Issuer
from tcworker.platform.queue.waiters import Waiters
from tcworker.platform.store.db import Database
from tcworker.platform.store.models import TaskRecord, canonical

SKEW_MS = 15 * 60 * 1000
MAX_DEADLINE_MS = 5 * 24 * 3600 * 1000
YEAR_MS = 365 * 24 * 3600 * 1000
CLAIM_WAIT_SECONDS = 20.0


def resolve_task_queue(payload: dict[str, Any]) -> None:
    """Fill taskQueueId / provisionerId / workerType from each other (§2.2); 400 when inconsistent."""
    tq, prov, wt = payload.get("taskQueueId"), payload.get("provisionerId"), payload.get("workerType")
    if tq is not None:
        p, _, w = tq.partition("/")
        if (prov is not None and prov != p) or (wt is not None and wt != w):
            raise InputError("taskQueueId must match provisionerId/workerType when both are given")
        payload["provisionerId"], payload["workerType"] = p, w
    elif prov is not None and wt is not None:
        payload["taskQueueId"] = f"{prov}/{wt}"
    else:
        raise InputError("give taskQueueId, or both provisionerId and workerType")


class QueueService:
    """The queue's operations; ``run_tx`` executes a store function in one transaction."""

    def __init__(self, db: Database, waiters: Waiters, issuer: Issuer, claim_timeout: float) -> None:
        self.db = db
        self.waiters = waiters
        self.issuer = issuer
        self.claim_timeout_ms = int(claim_timeout * 1000)
        self.order = taskstore.PendingOrder()

    def notify(self, queues: list[str]) -> None:
        for queue in queues:
            self.waiters.notify(queue)

    async def mutate(self, task_id: str, event: str, **kw: Any) -> TaskRecord:
        """Load, apply one event, save, notify. 404 for an unknown task."""

        def op(conn: sqlite3.Connection) -> tuple[TaskRecord, list[str]]:
            task = self._must_load(conn, task_id)
            return task, taskstore.transition(conn, task, event, now_ms(), self.order, **kw)

        task, queues = await self.db.run(op)
        self.notify(queues)
        return task

    @staticmethod
    def _must_load(conn: sqlite3.Connection, task_id: str) -> TaskRecord:
        task = taskstore.load(conn, task_id)
        if task is None:
            raise ResourceNotFound(f"Task {task_id} not found")
        return task

    async def get(self, task_id: str) -> TaskRecord:
        return await self.db.read(self._must_load, task_id)

    async def status(self, task_id: str) -> dict[str, Any]:
        """The task's status structure (what ``get(task_id).status()`` gives), read cheaply."""
        status = await self.db.read(taskstore.load_status, task_id)
        if status is None:
            raise ResourceNotFound(f"Task {task_id} not found")
        return status

    # -- createTask -------------------------------------------------------------------------

    def check_times(self, d: dict[str, Any]) -> tuple[int, int]:
        """The §2.2 time rules; normalises created/deadline/expires to millisecond form."""
        now = now_ms()
        created, deadline = parse_ms(d["created"]), parse_ms(d["deadline"])
        expires = parse_ms(d["expires"]) if "expires" in d else deadline + YEAR_MS
        if abs(created - now) > SKEW_MS:
            raise InputError("Task.created must be within 15 minutes of the current time")
        if deadline < created:
            raise InputError("Task.deadline must not be before Task.created")
        if deadline < now:
            raise InputError("Task.deadline is in the past")
        if deadline > now + MAX_DEADLINE_MS + SKEW_MS:
            raise InputError("Task.deadline cannot be more than 5 days into the future")
        if expires < deadline:
            raise InputError("Task.expires must not be before Task.deadline")
        d["created"], d["deadline"], d["expires"] = json_ms(created), json_ms(deadline), json_ms(expires)
        return deadline, expires

    async def create_task(self, task_id: str, d: dict[str, Any]) -> TaskRecord:
        deadline_ms, expires_ms = self.check_times(d)
        d = canonical(d)
        if any(s.endswith("**") for s in d["scopes"]):
            raise InputError("scopes must not end in `**`")
        record = TaskRecord(task_id, d, d["retries"], d["retries"], deadline_ms, expires_ms)

        def op(conn: sqlite3.Connection) -> tuple[TaskRecord, list[str]]:
            existing = taskstore.load(conn, task_id)
            if existing is not None:
                if existing.definition != d:
                    raise RequestConflict(f"taskId {task_id} already used by another task definition")
                return existing, []
            deps = taskstore.load_many(conn, [x for x in d["dependencies"] if x != task_id])
            missing = [x for x in d["dependencies"] if x != task_id and x not in deps]
            if missing:
                raise InputError("dependencies do not exist: " + ", ".join(missing[:20]))
            short = [x for x, t in deps.items() if t.expires_ms < deadline_ms]
            if short:
                raise InputError("dependencies expire before this task's deadline: " + ", ".join(short[:20]))
            self._join_group(conn, d, expires_ms)
            unsatisfied = taskstore.insert_dependencies(conn, record, deps)
            if unsatisfied == 0:  # scheduled at once: insert it already pending (one write, not two)
                statemachine.apply(record, "schedule", now_ms())
            taskstore.insert(conn, record, self.order)
            return record, [record.task_queue_id] if unsatisfied == 0 else []

        task, queues = await self.db.run(op)
        self.notify(queues)
        return task

    @staticmethod
    def _join_group(conn: sqlite3.Connection, d: dict[str, Any], expires_ms: int) -> None:
        row = conn.execute(
            "SELECT scheduler_id, expires_ms, sealed_ms FROM task_groups WHERE task_group_id = ?",
            (d["taskGroupId"],),
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO task_groups (task_group_id, scheduler_id, expires_ms) VALUES (?, ?, ?)",
                (d["taskGroupId"], d["schedulerId"], expires_ms),
            )
            return
        if row["scheduler_id"] != d["schedulerId"]:
            raise RequestConflict(
                f"task group {d['taskGroupId']} belongs to schedulerId `{row['scheduler_id']}`"
            )
        if row["sealed_ms"] is not None:
            raise RequestConflict(f"task group {d['taskGroupId']} is sealed")
        if row["expires_ms"] < expires_ms:
            conn.execute(
                "UPDATE task_groups SET expires_ms = ? WHERE task_group_id = ?",
                (expires_ms, d["taskGroupId"]),
            )

    # -- lifecycle ------------------------------------------------------------------------

    async def schedule(self, task: TaskRecord) -> TaskRecord:
        if now_ms() >= task.deadline_ms:
            raise RequestConflict("Task deadline has passed")
        if task.state != "unscheduled":
            return task
        return await self.mutate(task.task_id, "schedule")

    async def cancel(self, task: TaskRecord) -> TaskRecord:
        if now_ms() >= task.deadline_ms:
            raise RequestConflict("Task deadline has passed")
        if task.state in ("completed", "failed", "exception"):
            return task
        return await self.mutate(task.task_id, "cancel")

    async def rerun(self, task: TaskRecord) -> TaskRecord:
        if now_ms() >= task.deadline_ms:
            raise RequestConflict("Task deadline has passed")
        if task.state in ("pending", "running"):
            return task
        if task.state == "unscheduled":
            raise RequestConflict("an unscheduled task cannot be rerun; schedule it")
        return await self.mutate(task.task_id, "rerun")

    def _check_run(self, task: TaskRecord, run_id: int) -> dict[str, Any]:
        if run_id >= len(task.runs):
            raise ResourceNotFound(f"Run {run_id} of task {task.task_id} not found")
        return task.runs[run_id]

    async def resolve(
        self, task_id: str, run_id: int, event: str, reason: str | None, authorize: Callable[[], None]
    ) -> TaskRecord:
        """reportCompleted / reportFailed / reportException: idempotent for the same resolution.

        ``authorize`` runs after the task is found (404 before 403) inside the same database round
        trip, which keeps the hot path to one hop to the writer thread.
        """

        def op(conn: sqlite3.Connection) -> tuple[TaskRecord, list[str]]:
            task = self._must_load(conn, task_id)
            authorize()
            run = self._check_run(task, run_id)
            wanted = {"completed": "completed", "failed": "failed"}.get(event, reason)
            state = {"completed": "completed", "failed": "failed"}.get(event, "exception")
            if run["state"] == state and run.get("reasonResolved") == wanted:
                return task, []
            if run["state"] != "running" or run_id != len(task.runs) - 1:
                raise RequestConflict(f"Run {run_id} of task {task_id} is `{run['state']}`, not running")
            return task, taskstore.transition(conn, task, event, now_ms(), self.order, reason=reason)

        task, queues = await self.db.run(op)
        self.notify(queues)
        return task

    async def reclaim(
        self, task_id: str, run_id: int, authorize: Callable[[], None]
    ) -> tuple[TaskRecord, dict[str, str]]:
        def op(conn: sqlite3.Connection) -> TaskRecord:
            task = self._must_load(conn, task_id)
            authorize()
            run = self._check_run(task, run_id)
            now = now_ms()
            if run_id != len(task.runs) - 1 or run["state"] != "running" or now >= task.deadline_ms:
                raise RequestConflict(f"Run {run_id} of task {task_id} is no longer running; stop the task")
            taskstore.transition(
                conn, task, "reclaim", now, self.order, taken_until_ms=now + self.claim_timeout_ms
            )
            return task

        task = await self.db.run(op)
        return task, self._credentials(task, run_id)

    def _credentials(self, task: TaskRecord, run_id: int) -> dict[str, str]:
        run = task.runs[run_id]
        assert task.taken_until_ms is not None
        return self.issuer.task_credentials(
            task.task_id,
            run_id,
            (run["workerGroup"], run["workerId"]),
            task.definition["scopes"],
            now_ms(),
            task.taken_until_ms,
        )

    def claim_answer(self, task: TaskRecord) -> dict[str, Any]:
        """claimWork / claimTask entry: the run answer plus the task definition."""
        run_id = len(task.runs) - 1
        answer = self.run_answer(task, run_id, self._credentials(task, run_id))
        answer["task"] = task.definition
        return answer

    @staticmethod
    def run_answer(task: TaskRecord, run_id: int, credentials: dict[str, Any]) -> dict[str, Any]:
        """The fields claim and reclaim answers share (task-reclaim-response.json)."""
        run = task.runs[run_id]
        return {
            "status": task.status(),
            "runId": run_id,
            "workerGroup": run["workerGroup"],
            "workerId": run["workerId"],
            "takenUntil": run["takenUntil"],
            "credentials": credentials,
        }

    async def claim_task(self, task_id: str, run_id: int, worker: tuple[str, str]) -> TaskRecord:
        def op(conn: sqlite3.Connection) -> tuple[TaskRecord, list[str]]:
            task = self._must_load(conn, task_id)
            run = self._check_run(task, run_id)
            now = now_ms()
            if now >= task.deadline_ms:
                raise RequestConflict("Task deadline has passed")
            if run["state"] == "running" and (run.get("workerGroup"), run.get("workerId")) == worker:
                return task, []
            if run["state"] != "pending" or run_id != len(task.runs) - 1:
                raise RequestConflict(f"Run {run_id} of task {task_id} is `{run['state']}`, not pending")
            taken_until = now + self.claim_timeout_ms
            return task, taskstore.transition(
                conn, task, "claim", now, self.order, worker=worker, taken_until_ms=taken_until
            )

        task, _ = await self.db.run(op)
        return task

    async def claim_work(
        self, queue: str, worker: tuple[str, str], count: int, still_wanted: Callable[[], bool]
    ) -> list[TaskRecord]:
        """Claim up to ``count`` runs, long-polling up to 20 s on in-process notifications."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CLAIM_WAIT_SECONDS
        while True:
            seq = self.waiters.seq(queue)
            now = now_ms()
            claimed = await self.db.run(
                taskstore.claim_pending, queue, worker, count, now, now + self.claim_timeout_ms, self.order
            )
            if claimed or self.waiters.closed:
                return claimed
            if self.waiters.seq(queue) != seq:
                continue
            if not still_wanted():
                return []
            if not await self.waiters.wait(queue, give_up - loop.time()):
                return []
            if not still_wanted():
                self.waiters.notify(queue)  # pass the wake-up on to a caller that is still there
                return []
