"""The platform's SQLite database: WAL mode, migrations, and the thread that runs its jobs.

Jobs run one at a time on a dedicated thread (fed by a queue), so all transactions are
serialised; transitions are still written as compare-and-set ``UPDATE ... WHERE version = ?`` so
a logic slip cannot double-hand a run. A job of the event loop that opened the database runs at
once on that loop instead when nothing is pending on the thread (``_submit``): at idle the hop
to the thread and back only adds two thread wake-ups per job, and without them an idle trivial
task's path (about ten jobs) measured 2.5–3 ms shorter (issue 15, thirteenth session); when jobs
are pending, a new one goes to the thread behind them, in order, and shares their batch. A job
run at once blocks the loop for its few statements (and, every ~1000 WAL pages, for SQLite's
automatic checkpoint); a long one asks for the thread (``run_on_thread``).

Durability: WAL with ``synchronous=NORMAL`` commits without an fsync per transaction. That is
safe against ``kill -9`` of the server (a committed transaction is in the WAL file, in the OS page
cache, and is replayed on the next open); only an OS crash or power loss may lose the last few
commits, which is the trade-off the local platform makes for latency.

Hand-off: the jobs a loop iteration submits reach the thread together, as one item put on its
queue by a callback at the end of that iteration (``_flush``), so a burst of requests wakes the
thread once, not once per job; each wake-up is a GIL hand-over between the two threads, which
measured at 6-12 % of the platform's CPU per task under 16 clients (issue 15). Running every
job on the loop instead (with a second connection, and again in the twelfth session with this
one) saved nothing under load: the thread's batches share their hand-back and their COMMIT;
only the jobs that would wait for nothing run there now. The thread runs under
``SCHED_BATCH`` so that waking it does not preempt the event loop (``_no_wakeup_preemption``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
#: One finished job: its future, its value, or the exception it raised.
Result = tuple["asyncio.Future[Any]", Any, "BaseException | None"]

_PACKAGE = "tcworker.platform.store"


def _migration_files() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every shipped migration, in order."""
    found = []
    for entry in (importlib.resources.files(_PACKAGE) / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


STATEMENT_CACHE = 512
_STOP = object()  # put on the job queue by close(): the writer thread returns


class Database:
    """Owns the connection and the writer thread; `run(fn, ...)` executes `fn(conn, ...)` there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        # A plain thread blocked on a SimpleQueue, not a ThreadPoolExecutor: the executor's
        # future, lock and semaphore bookkeeping cost ~30 us of each request's hand-off.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Jobs of the current loop iteration, put on ``_jobs`` as one list by ``_flush``.
        self._outbox: list[Any] = []
        #: The loop that opened the database owns the outbox; any other loop's jobs go directly.
        self._home_loop: asyncio.AbstractEventLoop | None = None
        #: Held by whoever is using the connection: the thread for a batch, the loop for a job
        #: run at once (``_submit``).
        self._using = threading.Lock()
        #: Jobs submitted to the thread and not yet run (changed under ``_counting``).
        self._pending = 0
        self._counting = threading.Lock()
        #: Whether a job may run at once on the home loop when nothing is pending (``_submit``).
        self.inline = True

    async def open(self) -> None:
        self._home_loop = asyncio.get_running_loop()
        await self.run_raw(self._open)

    def _open(self) -> None:
        # Every statement is prepared once and kept: the platform has about a hundred distinct
        # ones (more than the default cache of 128 once IN (...) lists of several sizes appear).
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENT_CACHE
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        self._conn = conn
        self._migrate(conn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for number, name, sql in _migration_files():
            if number in done:
                continue
            record = f"INSERT INTO schema_migrations (version, name) VALUES ({number}, '{name}');"
            try:
                # One script, one transaction: a migration is applied whole or not at all.
                conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n{record}\nCOMMIT;")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    async def run_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread, batched with whatever else is waiting (or at
        once on the loop when nothing is: ``_submit``).

        The thread takes every job queued so far, runs them in order and hands all results back
        with a single ``call_soon_threadsafe``. Under load this costs one thread hop per batch
        instead of one per query (thread hops, not SQLite, dominate).
        """
        return await self._submit(fn, args, False)

    async def _submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], transaction: bool, may_inline: bool = True
    ) -> T:
        """Run the job at once when it is the home loop's, no job is pending (so none can be
        overtaken) and the connection is free; else queue it for the thread."""
        loop = asyncio.get_running_loop()
        if (
            may_inline
            and loop is self._home_loop
            and self.inline
            and self._pending == 0
            and self._using.acquire(blocking=False)
        ):
            try:  # nothing waits for the thread: a hop would only add two wake-ups
                value = self._transaction(fn, args) if transaction else fn(*args)
            finally:
                self._using.release()
            await asyncio.sleep(0)  # still a yield, as the hop was: a loop of jobs cannot starve the rest
            return value
        fut: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="tcw-db", daemon=True)
            self._thread.start()
        job = (fn, args, fut, loop, transaction)
        self._count(1)
        if loop is not self._home_loop:
            self._jobs.put(job)
        else:
            if not self._outbox:
                loop.call_soon(self._flush)
            self._outbox.append(job)
        return await fut

    def _count(self, jobs: int) -> None:
        with self._counting:
            self._pending += jobs

    def _flush(self) -> None:
        """Hand this iteration's jobs to the thread in one put (one wake-up for the burst)."""
        outbox, self._outbox = self._outbox, []
        self._jobs.put(outbox)

    def _serve(self) -> None:
        """The writer thread: wait for a job, then run it and everything queued behind it.

        Consecutive transactions of one batch share a single commit (``_run_group``): under load
        that is one WAL write for several requests instead of one each.
        """
        _no_wakeup_preemption()
        while True:
            batch = _jobs_of(self._jobs.get())
            while True:
                try:
                    batch += _jobs_of(self._jobs.get_nowait())
                except queue.Empty:
                    break
            with self._using:
                deliveries, stop = self._run_batch(batch)
            self._count(-sum(job is not _STOP for job in batch))
            for loop, results in deliveries:
                self._hand_back(loop, results)
            if stop:
                return

    def _run_batch(
        self, batch: list[Any]
    ) -> tuple[list[tuple[asyncio.AbstractEventLoop | None, list[Result]]], bool]:
        """Run one batch in order: (the results for each loop, in order; whether it held ``_STOP``).

        The results are handed back by the caller once the connection is free and the jobs are
        no longer counted as pending, so that a coroutine woken by them may run its next job at once.
        """
        deliveries: list[tuple[asyncio.AbstractEventLoop | None, list[Result]]] = []
        results: list[Result] = []
        group: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        loop: asyncio.AbstractEventLoop | None = None
        for job in batch:
            if job is _STOP:
                deliveries.append((loop, results + self._run_group(group)))
                return deliveries, True
            fn, args, fut, job_loop, transaction = job
            if loop is not None and job_loop is not loop:  # another loop: deliver what we have
                deliveries.append((loop, results + self._run_group(group)))
                group, results = [], []
            loop = job_loop
            if transaction:
                group.append((fn, args, fut))
                continue
            results += self._run_group(group)  # keep the order: earlier writes commit first
            group = []
            try:
                results.append((fut, fn(*args), None))
            except BaseException as exc:  # delivered to the awaiting coroutine
                results.append((fut, None, exc))
        deliveries.append((loop, results + self._run_group(group)))
        return deliveries, False

    def _run_group(
        self, group: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]]
    ) -> list[Result]:
        """Run transactions in one ``BEGIN IMMEDIATE ... COMMIT``, each inside its own savepoint.

        A job that raises is rolled back to its savepoint and gets its exception; the others are
        unaffected. Results are handed back only after the COMMIT: when the COMMIT (or a rollback)
        fails, nothing of the group was stored and every job that had not failed on its own gets
        that error — exactly what each would have got from its own failed COMMIT.
        """
        if not group:
            return []
        if len(group) == 1:
            fn, args, fut = group[0]
            try:
                return [(fut, self._transaction(fn, args), None)]
            except BaseException as exc:
                return [(fut, None, exc)]
        conn = self._conn
        assert conn is not None, "database not open"
        done: list[Result] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, fut in group:
                conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn, *args)
                except BaseException as exc:
                    try:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    except BaseException:
                        raise exc from None  # the transaction is gone: the job's error is the cause
                    done.append((fut, None, exc))
                    continue
                conn.execute("RELEASE job")
                done.append((fut, value, None))
            conn.execute("COMMIT")
            return done
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            own = {id(fut): err for fut, _, err in done if err is not None}
            return [(fut, None, own.get(id(fut), exc)) for _, _, fut in group]

    @staticmethod
    def _hand_back(loop: asyncio.AbstractEventLoop | None, results: list[Result]) -> None:
        if loop is None or not results:
            return
        try:
            loop.call_soon_threadsafe(_deliver, results)
        except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
            pass

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` inside one IMMEDIATE transaction on the writer thread.

        Under load several of these share one commit (see ``_run_group``); each still sees the
        writes of those before it and is rolled back alone when it raises.
        """
        return await self._submit(fn, args, True)

    async def run_on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``run``, but always on the database thread: for a long job (the expiry pass deletes
        up to a thousand tasks with their artifacts), which on the loop would hold every request
        up, even those that need no database."""
        return await self._submit(fn, args, True, may_inline=False)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer thread without opening a write transaction."""
        return await self.run_raw(self._plain, fn, args)

    def _plain(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._conn is not None, "database not open"
        return fn(self._conn, *args)

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._conn
        assert conn is not None, "database not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed (e.g. SQLITE_FULL on a full disk): the transaction may
            # still be open, and leaving it open would make every later BEGIN fail.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def close(self) -> None:
        if self._conn is not None:
            await self.run_raw(self._close)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(thread.join)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _no_wakeup_preemption() -> None:
    """Run the calling thread (the database thread) under ``SCHED_BATCH`` where Linux offers it.

    Waking the database thread (a job put on its queue) made the kernel preempt the event loop for
    it on the same CPU, only for it to block at once on the GIL the loop still held: two thread
    switches per hand-off, ~1.6 involuntary switches of the loop per task under 16 clients. A
    ``SCHED_BATCH`` thread is never woken into preempting another; it still gets its full share of
    CPU. Measured (issue 15): the loop's involuntary switches per task halved and the platform's
    CPU per task ~3 % lower. Needs no privilege; elsewhere it is skipped.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # type: ignore[attr-defined]


def _jobs_of(item: Any) -> list[Any]:
    """A queue item is one job (or ``_STOP``), or a list of jobs from ``_flush``."""
    return item if isinstance(item, list) else [item]


def _deliver(results: list[Result]) -> None:
    for fut, value, exc in results:
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def ensure_meta(conn: sqlite3.Connection, key: str, make: Callable[[], str]) -> str:
    """Read a persistent setting, creating it once with ``make()`` (e.g. the queue's issuer token)."""
    value = get_meta(conn, key)
    if value is None:
        value = make()
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
    return value
