"""The event loop's own path into SQLite (``Database.run_on_loop`` / ``read_on_loop``, issue 15).

The hot queue calls run their statements on the loop's connection, and the jobs of one loop
iteration share one COMMIT. Each must still behave as its own transaction: a job that raises is
rolled back alone, a COMMIT that fails fails every job it carried and stores nothing, nobody is
answered before the COMMIT, and a read never sees what is not committed. The loop never waits for a
lock: while the database thread holds the write lock, a loop job is handed to the thread. The
loop's connection never checkpoints; the thread does, PASSIVE, after ``CHECKPOINT_EVERY`` loop
commits. Real SQLite files, the real ``Database`` and its thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from tcworker.platform.store import db as db_module
from tcworker.platform.store.db import Database


class Boom(Exception):
    pass


def _insert(conn: sqlite3.Connection, key: str, fail: bool = False) -> int:
    conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))
    if fail:
        raise Boom(key)
    return int(conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0])


def _stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'k%' ORDER BY key")]


def _run(path: Path, body: object) -> object:
    async def main() -> object:
        db = Database(path)
        await db.open()
        try:
            return await body(db)  # type: ignore[operator]
        finally:
            await db.close()

    return asyncio.run(main())


def test_jobs_of_one_iteration_share_a_commit_and_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> list[object]:
        jobs = [db.run_on_loop(_insert, key, key == "k2") for key in ("k1", "k2", "k3", "k4")]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    results = _run(path, body)
    assert results[0] == 1
    assert isinstance(results[1], Boom)
    assert results[2:] == [2, 3]  # k3 sees k1, not the rolled-back k2
    assert _stored(path) == ["k1", "k3", "k4"]


def test_a_failing_first_job_leaves_nothing_behind(tmp_path: Path) -> None:
    """The first job of a batch runs without a savepoint: its failure rolls the whole (empty) rest back."""
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> list[object]:
        first = await asyncio.gather(db.run_on_loop(_insert, "k1", True), return_exceptions=True)
        return [*first, await db.run_on_loop(_insert, "k2")]

    results = _run(path, body)
    assert isinstance(results[0], Boom)
    assert results[1] == 1
    assert _stored(path) == ["k2"]


def test_a_failed_commit_fails_every_job_and_stores_nothing(tmp_path: Path) -> None:
    """A deferred foreign-key violation only shows at COMMIT: every job of that COMMIT gets it."""
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> list[object]:
        def schema(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE child (id TEXT, parent TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
            )

        await db.run(schema)
        await db.read_on_loop(lambda conn: conn.execute("PRAGMA foreign_keys=ON"))
        good = db.run_on_loop(_insert, "k1")
        bad = db.run_on_loop(lambda conn: conn.execute("INSERT INTO child VALUES ('c', 'missing')"))
        failed = list(await asyncio.gather(good, bad, return_exceptions=True))
        await db.read_on_loop(lambda conn: conn.execute("PRAGMA foreign_keys=OFF"))
        after = await db.run_on_loop(_insert, "k2")  # the connection is usable again
        return [*failed, after]

    results = _run(path, body)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results[:2]), results
    assert results[2] == 1
    assert _stored(path) == ["k2"]


def test_nobody_is_answered_before_the_commit(tmp_path: Path) -> None:
    """When the job returns, another connection already sees its write."""
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> list[str]:
        await db.run_on_loop(_insert, "k1")
        return _stored(path)

    assert _run(path, body) == ["k1"]


def test_a_read_never_sees_an_uncommitted_write(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> tuple[int, list[str], int]:
        write = asyncio.ensure_future(db.run_on_loop(_insert, "k1"))
        await asyncio.sleep(0)  # the job ran; its COMMIT is due at the next iteration
        seen = await db.read_on_loop(lambda c: c.execute("SELECT COUNT(*) FROM meta WHERE key = 'k1'").fetchone()[0])
        # The read committed the open transaction first: what it saw is stored.
        return seen, _stored(path), await write

    assert _run(path, body) == (1, ["k1"], 1)


def test_a_loop_job_goes_to_the_thread_while_the_thread_writes(tmp_path: Path) -> None:
    """The loop keeps running (a timer fires) while the thread holds the write lock."""
    path = tmp_path / "db.sqlite3"

    async def body(db: Database) -> tuple[int, bool, list[str]]:
        gate = threading.Event()
        holding = threading.Event()

        def hold_the_lock(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('k0', 'v')")
            holding.set()
            gate.wait(10)

        blocker = asyncio.ensure_future(db.run(hold_the_lock))
        await asyncio.to_thread(holding.wait, 10)
        job = asyncio.ensure_future(db.run_on_loop(_insert, "k1"))
        ticked = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, ticked.set)
        await asyncio.wait_for(ticked.wait(), 5)  # the loop was not blocked by the lock
        waiting = not job.done()
        gate.set()
        await blocker
        return await job, waiting, _stored(path)

    count, waited, stored = _run(path, body)
    assert waited, "the loop job should have waited for the thread's transaction"
    assert count == 2  # ran after k0 committed, on the thread
    assert stored == ["k0", "k1"]


def test_checkpoints_are_run_by_the_thread(tmp_path: Path, monkeypatch: object) -> None:
    path = tmp_path / "db.sqlite3"
    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY", 5)  # type: ignore[attr-defined]
    threads: list[str] = []
    real = Database._checkpoint

    def spy(self: Database) -> tuple[int, int, int]:
        threads.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(Database, "_checkpoint", spy)  # type: ignore[attr-defined]

    async def body(db: Database) -> int:
        autocheckpoint = await db.read_on_loop(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        for i in range(12):
            await db.run_on_loop(_insert, f"k{i:02d}")
        await db.read(lambda _c: None)  # the thread has run the queued checkpoints
        return int(autocheckpoint)

    assert _run(path, body) == 0
    assert threads and set(threads) == {"tcw-db"}, threads
    assert len(_stored(path)) == 12
