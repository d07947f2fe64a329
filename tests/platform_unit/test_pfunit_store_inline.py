"""A database job runs at once on the event loop when nothing is pending on the thread.

At idle, a hop to the database thread and back only adds two thread wake-ups to a request (on
this kind of machine ~2.5 ms of an idle task's path); when jobs are pending, a new one queues
behind them, so the order of writes is kept. Real SQLite files, the real ``Database``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path

from tcworker.platform.store.db import Database


def _insert(conn: sqlite3.Connection, key: str) -> int:
    """Insert ``key``; returns the thread that ran it."""
    conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))
    return threading.get_ident()


def _keys(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'k%' ORDER BY rowid")]


def test_a_job_at_idle_runs_on_the_loop_and_is_committed(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        db = Database(tmp_path / "db.sqlite3")
        await db.open()
        try:
            ran_on = await db.run(_insert, "k1")
            return ran_on, threading.get_ident()
        finally:
            await db.close()

    ran_on, loop_thread = asyncio.run(main())
    assert ran_on == loop_thread
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert _keys(conn) == ["k1"]  # committed: another connection sees it


def test_a_long_job_asked_on_the_thread_runs_there_even_at_idle(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, list[str]]:
        db = Database(tmp_path / "db.sqlite3")
        await db.open()
        try:
            ran_on = await db.run_on_thread(_insert, "k1")
            return ran_on, threading.get_ident(), await db.read(_keys)
        finally:
            await db.close()

    ran_on, loop_thread, keys = asyncio.run(main())
    assert ran_on != loop_thread
    assert keys == ["k1"]


def test_a_job_submitted_while_others_are_pending_queues_behind_them(tmp_path: Path) -> None:
    """The thread is busy with a slow job and another waits behind it: a new job must not jump
    the queue on the loop, and must not use the connection beside the thread."""

    async def main() -> tuple[list[str], list[int], int]:
        db = Database(tmp_path / "db.sqlite3")
        await db.open()
        try:
            gate = threading.Event()
            db.inline = False  # put the blocker and the first write on the thread
            blocker = asyncio.ensure_future(db.read(lambda _conn: gate.wait(10)))
            first = asyncio.ensure_future(db.run(_insert, "k1"))
            await asyncio.sleep(0.05)  # the thread is inside the blocker, k1 queued behind it
            db.inline = True
            second = asyncio.ensure_future(db.run(_insert, "k2"))
            await asyncio.sleep(0.05)
            assert not second.done(), "k2 ran while k1 was still pending"
            gate.set()
            threads = list(await asyncio.gather(first, second))
            await blocker
            keys = await db.read(_keys)
            return keys, threads, threading.get_ident()
        finally:
            await db.close()

    keys, threads, loop_thread = asyncio.run(main())
    assert keys == ["k1", "k2"]
    assert loop_thread not in threads  # both went through the thread


def test_a_job_queued_for_the_thread_is_not_overtaken_by_a_later_one(tmp_path: Path) -> None:
    """The thread is idle (the connection free) but has not yet taken the job queued for it: a
    later job must still go behind it, not run at once ahead of it."""
    taking = threading.Event()

    class HeldQueue(queue.SimpleQueue):  # type: ignore[type-arg]
        def get(self, block: bool = True, timeout: float | None = None) -> object:
            taking.wait(10)  # the thread waits here before taking its next batch
            return super().get(block, timeout)

    async def main() -> tuple[list[str], bool]:
        db = Database(tmp_path / "db.sqlite3")
        db._jobs = HeldQueue()
        await db.open()
        try:
            db.inline = False
            first = asyncio.ensure_future(db.run(_insert, "k1"))
            await asyncio.sleep(0.05)  # k1 handed to the thread, which has not taken it
            db.inline = True
            second = asyncio.ensure_future(db.run(_insert, "k2"))
            await asyncio.sleep(0.05)
            overtaken = second.done()
            taking.set()
            await asyncio.gather(first, second)
            return await db.read(_keys), overtaken
        finally:
            taking.set()
            await db.close()

    keys, overtaken = asyncio.run(main())
    assert not overtaken, "k2 ran before k1, which was queued first"
    assert keys == ["k1", "k2"]


def test_a_failing_job_at_idle_raises_and_stores_nothing(tmp_path: Path) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k1', 'v')")
        raise ValueError("no")

    async def main() -> tuple[BaseException | None, list[str]]:
        db = Database(tmp_path / "db.sqlite3")
        await db.open()
        try:
            error = None
            try:
                await db.run(half_then_fail)
            except ValueError as e:
                error = e
            return error, await db.read(_keys)
        finally:
            await db.close()

    error, keys = asyncio.run(main())
    assert isinstance(error, ValueError)
    assert keys == []


def test_a_loop_of_jobs_at_idle_still_lets_other_coroutines_run(tmp_path: Path) -> None:
    """Each job run at once is followed by a yield, as the hop was: a coroutine writing many rows
    one job at a time (an expiry sweep) cannot starve the requests beside it."""

    async def main() -> tuple[int, int]:
        db = Database(tmp_path / "db.sqlite3")
        await db.open()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beside = asyncio.ensure_future(ticker())
        try:
            await asyncio.sleep(0)
            before = ticks
            on_loop = 0
            for i in range(200):
                if await db.run(_insert, f"k{i:03d}") == threading.get_ident():
                    on_loop += 1
            return ticks - before, on_loop
        finally:
            beside.cancel()
            await db.close()

    ticks, on_loop = asyncio.run(main())
    assert on_loop == 200  # nothing else used the database: every job ran at once
    assert ticks >= 150, f"the coroutine beside the writes ran only {ticks} times during 200 jobs"
