"""The database thread's group commit: transactions queued together share one COMMIT.

Each job still behaves as its own transaction: it sees the writes queued before it, a job that
raises is rolled back alone (its partial writes vanish, the others are stored), and a COMMIT that
fails takes every job of the group with it. Real SQLite files, the real ``Database`` thread;
its jobs run at once on the loop when nothing is pending (``test_pfunit_store_inline``), so these
tests turn that off to exercise the thread's batches.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path

import pytest

from tcworker.platform.store.db import Database


class Boom(Exception):
    pass


def _insert(conn: sqlite3.Connection, key: str, fail: bool = False) -> int:
    conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))
    if fail:
        raise Boom(key)
    return int(conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0])


def _threaded(path: Path) -> Database:
    """A database whose every job goes through its thread (none run at once on the loop)."""
    db = Database(path)
    db.inline = False
    return db


def _stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'k%' ORDER BY key")]


async def _queued_together(db: Database, jobs: list[tuple[str, bool]]) -> list[object]:
    """Hold the database thread until every job is queued, so they form one batch."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(db.read(lambda _conn: gate.wait(10)))
    await asyncio.sleep(0.05)  # the thread is now inside the blocker
    futures = [asyncio.ensure_future(db.run(_insert, key, fail)) for key, fail in jobs]
    await asyncio.sleep(0.05)  # all queued behind it
    gate.set()
    await blocker
    return list(await asyncio.gather(*futures, return_exceptions=True))


def test_a_failing_job_is_rolled_back_alone(tmp_path: Path) -> None:
    async def main() -> list[object]:
        db = _threaded(tmp_path / "db.sqlite3")
        await db.open()
        try:
            return await _queued_together(db, [("k1", False), ("k2", True), ("k3", False)])
        finally:
            await db.close()

    results = asyncio.run(main())
    assert results[0] == 1
    assert isinstance(results[1], Boom)
    assert results[2] == 2  # k3 sees k1, not the rolled-back k2
    assert _stored(tmp_path / "db.sqlite3") == ["k1", "k3"]


def _deferred_foreign_key_schema(conn: sqlite3.Connection) -> None:
    """A child table whose foreign key is checked only at COMMIT (a failing COMMIT on demand)."""
    conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id TEXT, parent TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )


def test_a_failed_commit_fails_every_job_of_the_group(tmp_path: Path) -> None:
    """A deferred foreign-key violation only shows at COMMIT: nothing of the group is stored."""

    async def main() -> list[object]:
        db = _threaded(tmp_path / "db.sqlite3")
        await db.open()

        await db.run(_deferred_foreign_key_schema)
        await db.read(lambda conn: conn.execute("PRAGMA foreign_keys=ON"))
        try:
            gate = threading.Event()
            blocker = asyncio.ensure_future(db.read(lambda _conn: gate.wait(10)))
            await asyncio.sleep(0.05)
            good = asyncio.ensure_future(db.run(_insert, "k1"))
            bad = asyncio.ensure_future(
                db.run(lambda conn: conn.execute("INSERT INTO child VALUES ('c', 'missing')"))
            )
            await asyncio.sleep(0.05)
            gate.set()
            await blocker
            return list(await asyncio.gather(good, bad, return_exceptions=True))
        finally:
            await db.read(lambda conn: conn.execute("PRAGMA foreign_keys=OFF"))
            await db.close()

    results = asyncio.run(main())
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert _stored(tmp_path / "db.sqlite3") == []


@pytest.mark.parametrize("jobs", [1, 2, 25])
def test_every_job_of_a_batch_is_committed(tmp_path: Path, jobs: int) -> None:
    async def main() -> list[object]:
        db = _threaded(tmp_path / "db.sqlite3")
        await db.open()
        try:
            return await _queued_together(db, [(f"k{i:02d}", False) for i in range(jobs)])
        finally:
            await db.close()

    assert asyncio.run(main()) == list(range(1, jobs + 1))
    assert _stored(tmp_path / "db.sqlite3") == [f"k{i:02d}" for i in range(jobs)]


def test_a_burst_of_one_loop_iteration_reaches_the_thread_as_one_batch(tmp_path: Path) -> None:
    """Jobs submitted in one loop iteration wake the thread once and share one COMMIT.

    No gate holds the thread here: the burst is handed over as one queue item at the end of the
    iteration, so a COMMIT that fails (a deferred foreign-key violation in the last job) fails
    every job of the burst and stores nothing.
    """

    class CountingQueue(queue.SimpleQueue):  # type: ignore[type-arg]
        puts = 0

        def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
            CountingQueue.puts += 1
            super().put(item, block, timeout)

    async def main() -> tuple[list[object], int]:
        db = _threaded(tmp_path / "db.sqlite3")
        db._jobs = CountingQueue()
        await db.open()

        await db.run(_deferred_foreign_key_schema)
        await db.read(lambda conn: conn.execute("PRAGMA foreign_keys=ON"))
        before = CountingQueue.puts
        try:
            jobs = [db.run(_insert, f"k{i}") for i in range(5)]
            jobs.append(db.run(lambda conn: conn.execute("INSERT INTO child VALUES ('c', 'missing')")))
            return list(await asyncio.gather(*jobs, return_exceptions=True)), CountingQueue.puts - before
        finally:
            await db.read(lambda conn: conn.execute("PRAGMA foreign_keys=OFF"))
            await db.close()

    results, puts = asyncio.run(main())
    assert puts == 1, f"the burst took {puts} hand-offs to the thread"
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert _stored(tmp_path / "db.sqlite3") == []
