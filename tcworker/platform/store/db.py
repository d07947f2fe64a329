"""The platform's SQLite database: WAL mode, migrations, two connections and the thread that owns one.

Two ways in. The hot queue calls (createTask, claimWork, report*, reclaim, status: a handful of
indexed single-row statements each) run *on the event loop* through ``run_on_loop`` /
``read_on_loop`` with a second connection: handing each of them to a thread cost a GIL round trip
and a loop wake-up per request, about a tenth of the platform's CPU per task (issue 15). Everything
else (listings, sweeps, object bookkeeping, migrations) runs on one dedicated thread fed by a
queue (``run`` / ``read``), so a long statement there never blocks the loop. What could make a
short statement slow is kept off the loop: the loop's connection never checkpoints
(``wal_autocheckpoint=0``); the thread runs PASSIVE checkpoints every ``CHECKPOINT_EVERY`` loop
commits, and a PASSIVE checkpoint never takes the write lock. The loop's connection never waits
for a lock either (``busy_timeout=0``): when the thread holds the write lock, the loop's
``BEGIN IMMEDIATE`` fails at once, before the job ran, and the job is handed to the thread instead.

Guarantees, on both paths: every transaction is ``BEGIN IMMEDIATE ... COMMIT`` and transitions are
still written as compare-and-set ``UPDATE ... WHERE version = ?`` so a logic slip cannot
double-hand a run; a COMMIT that fails (``SQLITE_FULL`` on a full disk: 507) is rolled back whole.
Durability: WAL with ``synchronous=NORMAL`` commits without an fsync per transaction. That is
safe against ``kill -9`` of the server (a committed transaction is in the WAL file, in the OS page
cache, and is replayed on the next open); only an OS crash or power loss may lose the last few
commits, which is the trade-off the local platform makes for latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
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


log = logging.getLogger(__name__)

STATEMENT_CACHE = 512
#: Loop commits between two PASSIVE checkpoints on the thread: a loop commit writes some ten
#: pages, so this keeps the WAL near SQLite's default 1000-page autocheckpoint size.
CHECKPOINT_EVERY = 100
_STOP = object()  # put on the job queue by close(): the writer thread returns
#: What SQLite answers, without waiting, when another connection holds the lock we asked for.
_LOCK_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class Database:
    """Owns the connection and the writer thread; `run(fn, ...)` executes `fn(conn, ...)` there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        #: The event loop's own connection (``run_on_loop`` / ``read_on_loop``).
        self._loop_conn: sqlite3.Connection | None = None
        #: Results of the loop jobs in the open loop transaction, answered at its COMMIT.
        self._batch: list[Result] | None = None
        self._commits_since_checkpoint = 0
        self._checkpoint_queued = False
        self._thread: threading.Thread | None = None
        # A plain thread blocked on a SimpleQueue, not a ThreadPoolExecutor: the executor's
        # future, lock and semaphore bookkeeping cost ~30 us of each request's hand-off.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def open(self) -> None:
        await self.run_raw(self._open)
        # After the migrations, so the loop never runs them; opening a file is quick.
        conn = self._connect(busy_timeout_ms=0)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the thread's job
        self._loop_conn = conn

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # Every statement is prepared once and kept: the platform has about a hundred distinct
        # ones (more than the default cache of 128 once IN (...) lists of several sizes appear).
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENT_CACHE
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _open(self) -> None:
        conn = self._connect(busy_timeout_ms=5000)
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
        """Run ``fn(*args)`` on the database thread, batched with whatever else is waiting.

        The thread takes every job queued so far, runs them in order and hands all results back
        with a single ``call_soon_threadsafe``. Under load this costs one thread hop per batch
        instead of one per query (thread hops, not SQLite, dominate).
        """
        return await self._submit(fn, args, False)

    async def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], transaction: bool) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="tcw-db", daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, fut, loop, transaction))
        return await fut

    def _serve(self) -> None:
        """The writer thread: wait for a job, then run it and everything queued behind it.

        Consecutive transactions of one batch share a single commit (``_run_group``): under load
        that is one WAL write for several requests instead of one each.
        """
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            results: list[Result] = []
            group: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
            loop: asyncio.AbstractEventLoop | None = None
            for job in batch:
                if job is _STOP:
                    results += self._run_group(group)
                    self._hand_back(loop, results)
                    return
                fn, args, fut, job_loop, transaction = job
                if loop is not None and job_loop is not loop:  # another loop: deliver what we have
                    results += self._run_group(group)
                    group = []
                    self._hand_back(loop, results)
                    results = []
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
            results += self._run_group(group)
            self._hand_back(loop, results)

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

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer thread without opening a write transaction."""
        return await self.run_raw(self._plain, fn, args)

    async def run_on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` as its own transaction right here on the event loop.

        For the short, indexed statements of the hot queue calls only: anything that may scan or
        write many rows belongs in ``run``. The jobs of one loop iteration share one
        ``BEGIN IMMEDIATE ... COMMIT`` (each inside a savepoint after the first), committed by a
        callback at the next iteration: a COMMIT writes every page it touched to the WAL, and the
        requests of one burst touch the same few pages. The answer waits for that COMMIT, so
        nothing is answered that is not stored. When the thread holds the write lock, SQLite
        refuses our ``BEGIN`` at once (``busy_timeout=0``): ``fn`` has not run, so it is handed to
        the thread, where it waits its turn like any other job.
        """
        conn = self._loop_conn
        if conn is None:  # not open (or closing): the thread path gives the usual errors
            return await self.run(fn, *args)
        batch = self._batch
        if batch is None:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) not in _LOCK_BUSY:
                    raise
                return await self.run(fn, *args)
            batch = self._batch = []
            asyncio.get_running_loop().call_soon(self._commit_batch)
        if not batch:
            # The first job needs no savepoint: if it raises, nothing else is in the transaction.
            try:
                value = fn(conn, *args)
            except BaseException:
                self._batch = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        else:
            conn.execute("SAVEPOINT job")
            try:
                value = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                raise
            conn.execute("RELEASE job")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        batch.append((fut, value, None))
        return await fut

    def _commit_batch(self) -> None:
        """COMMIT the loop's open transaction and answer its jobs (all fail if the COMMIT does)."""
        batch, self._batch = self._batch, None
        if batch is None:  # rolled back by its only job, or already committed by a read
            return
        conn = self._loop_conn
        assert conn is not None, "database closed with a transaction open"
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            # Also when COMMIT itself failed (SQLITE_FULL): roll back so the next BEGIN works.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            _deliver([(fut, None, exc) for fut, _, _ in batch])
            return
        _deliver(batch)
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint >= CHECKPOINT_EVERY and not self._checkpoint_queued:
            self._queue_checkpoint()

    async def read_on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)``, a short read with no side effects, right here on the event loop.

        An open loop transaction is committed first, so a read never sees what is not stored.
        WAL readers take no lock writers wait for; in the rare moments SQLite still answers busy
        (another connection recovering the WAL index), the read is simply run on the thread.
        """
        conn = self._loop_conn
        if conn is None:
            return await self.read(fn, *args)
        if self._batch is not None:
            self._commit_batch()
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _LOCK_BUSY:
                raise
        if conn.in_transaction:  # a read opens none, but never leave one behind
            conn.execute("ROLLBACK")
        return await self.read(fn, *args)

    def _queue_checkpoint(self) -> None:
        """Ask the thread for a PASSIVE checkpoint of what the loop wrote; nobody awaits it."""
        self._checkpoint_queued = True
        self._commits_since_checkpoint = 0
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        fut.add_done_callback(self._checkpoint_done)
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="tcw-db", daemon=True)
            self._thread.start()
        self._jobs.put((self._checkpoint, (), fut, loop, False))

    def _checkpoint(self) -> tuple[int, int, int]:
        """PASSIVE: copies what it can without waiting for, or blocking, readers and the writer."""
        assert self._conn is not None, "database not open"
        busy, wal_frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(wal_frames), int(copied)

    def _checkpoint_done(self, fut: asyncio.Future[Any]) -> None:
        self._checkpoint_queued = False
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("WAL checkpoint failed (retried after more commits): %s", fut.exception())

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
        if self._batch is not None:
            self._commit_batch()
        loop_conn, self._loop_conn = self._loop_conn, None
        if loop_conn is not None:  # first: the thread's connection, closed last, checkpoints
            loop_conn.close()
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
