"""Background resolvers owned by the app: claim expiry, deadlines, and expiry of old data.

Claim expiry and deadlines are checked every ``tick`` seconds (default 0.5 s), so a run whose
``takenUntil`` passed becomes ``exception/claim-expired`` (with a retry run while retries
remain) within about a second — also right after a restart, since claims are stored with their
``takenUntil``. Expired tasks, artifacts, objects (and their files) and index entries are
deleted once at start-up and then every ``expire_every`` seconds (so a restart removes whatever
has expired; ``tests/platform/test_queue_expiry.py`` relies on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

from tcworker.platform.clock import now_ms
from tcworker.platform.objects.content import ContentStore
from tcworker.platform.queue import taskstore
from tcworker.platform.queue.service import QueueService

log = logging.getLogger(__name__)


class Resolvers:
    def __init__(
        self, queue: QueueService, content: ContentStore, *, tick: float = 0.5, expire_every: float = 60.0
    ) -> None:
        self.queue = queue
        self.content = content
        self.tick = tick
        self.expire_every = expire_every

    def _resolve_once(self, conn: sqlite3.Connection) -> list[str]:
        now = now_ms()
        order = self.queue.order
        queues: list[str] = []
        for task in taskstore.past_deadline(conn, now):
            queues += taskstore.transition(conn, task, "deadline", now, order)
        for task in taskstore.expired_claims(conn, now):
            queues += taskstore.transition(conn, task, "claim-expired", now, order)
        return queues

    @staticmethod
    def _expire_once(conn: sqlite3.Connection) -> list[str]:
        now = now_ms()
        gone = [
            r[0] for r in conn.execute("SELECT task_id FROM tasks WHERE expires_ms < ? LIMIT 1000", (now,))
        ]
        for chunk in taskstore.chunked(gone, 500):
            marks = ",".join("?" * len(chunk))
            conn.execute(f"DELETE FROM artifacts WHERE task_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM tasks WHERE task_id IN ({marks})", chunk)
        conn.execute("DELETE FROM task_dependencies WHERE expires_ms < ?", (now,))
        conn.execute("DELETE FROM artifacts WHERE expires_ms < ?", (now,))
        conn.execute("DELETE FROM index_entries WHERE expires_ms < ?", (now,))
        conn.execute(
            "DELETE FROM task_groups WHERE expires_ms < ? AND NOT EXISTS"
            " (SELECT 1 FROM tasks WHERE tasks.task_group_id = task_groups.task_group_id)",
            (now,),
        )
        files = [r[0] for r in conn.execute("SELECT data_file FROM objects WHERE expires_ms < ?", (now,))]
        conn.execute("DELETE FROM objects WHERE expires_ms < ?", (now,))
        return files

    def _remove_files(self, files: list[str]) -> None:
        for f in files:
            self.content.remove(Path(f))

    async def run_claims(self) -> None:
        while True:
            try:
                self.queue.notify(await self.queue.db.run(self._resolve_once))
            except Exception:  # a resolver must outlive one bad pass; the next tick retries
                log.exception("claim/deadline resolver pass failed")
            await asyncio.sleep(self.tick)

    async def run_expiry(self) -> None:
        while True:
            try:
                files = await self.queue.db.run_on_thread(self._expire_once)
                await asyncio.to_thread(self._remove_files, files)
            except Exception:
                log.exception("expiry pass failed")
            await asyncio.sleep(self.expire_every)

    @contextlib.asynccontextmanager
    async def running(self):  # type: ignore[no-untyped-def]
        tasks = [asyncio.create_task(self.run_claims()), asyncio.create_task(self.run_expiry())]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
