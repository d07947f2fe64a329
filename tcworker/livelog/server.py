"""The live-log HTTP server: ``GET /log/<token>`` streams a running task's log as it grows.

generic-worker starts a ``livelog`` process per task and PUTs the log into it (spec/worker.md
§5.1); here one aiohttp server per worker process, on the worker's event loop, serves every
running task. It does not copy the log: a ``LogStream`` keeps the task log *file* open and
readers ``pread`` it from their own offset, woken when the task log reports new bytes. The file
already holds the masked bytes (the task log masks before writing), so readers see exactly the
backing log. Because the stream holds an open descriptor, the file outlives the run's scratch
directory, so a reader that is still behind, or connects shortly after the end, gets the rest.

Wire behaviour (GW's livelog plus ours): ``200``, ``Content-Type: text/plain; charset=utf-8``,
``Access-Control-Allow-Origin: *``, ``Access-Control-Expose-Headers: Transfer-Encoding``,
chunked, from byte 0, following the log until it is closed; wrong token → ``401 Access denied``.
Ours: ``?offset=N`` starts at byte N (200) and ``Range: bytes=N-`` does the same as ``206``
(``Content-Range`` only once the total is known), so a reader that reconnects resumes instead of
re-reading; a token whose log ended more than ``RETAIN_AFTER_END`` ago answers ``410``.

A finished log stays open for late readers, so what it pins is bounded: at most
``MAX_ENDED_KEPT`` finished logs (the oldest is retired early beyond that: a worker draining
150 trivial tasks/s would otherwise hold 18,000 descriptors and their deleted files), and the
``410`` answer is remembered for the last ``MAX_RETIRED_TOKENS`` tokens (older ones get ``401``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; charset=utf-8"
CHUNK = 1 << 20  # bytes per read/write for a reader that is behind
SMALL_READ = 256 * 1024  # read on the loop up to this much (page cache); bigger reads in a thread
RETAIN_AFTER_END = 120.0  # seconds a finished log stays readable through its old URL
MAX_ENDED_KEPT = 512  # finished logs kept open at most; beyond, the oldest is retired early
MAX_RETIRED_TOKENS = 8192  # retired tokens remembered to answer 410 (older ones: 401)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*$")


class FollowableLog(Protocol):
    """What the server needs of a task log (``tcworker.worker.tasklog.TaskLog``)."""

    path: Path
    bytes_written: int

    def add_listener(self, listener: Callable[[bytes], None]) -> None: ...

    def on_close(self, callback: Callable[[], None]) -> None: ...


class LogStream:
    """One task log as the server sees it: open file, bytes known to be in it, ended or not."""

    def __init__(self, task_log: FollowableLog, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = os.open(task_log.path, os.O_RDONLY | os.O_CLOEXEC)
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._log = task_log
        self._changed: asyncio.Future[None] = loop.create_future()
        self._wake_pending = False
        self.ended = False
        self.readers = 0
        self.retired = False
        task_log.add_listener(self._grown)
        task_log.on_close(self._closed)
        self.size = task_log.bytes_written  # after add_listener: never more than is on disk

    # -- writer side (any thread; called under the task log's lock) -----------------------
    def _grown(self, _data: bytes) -> None:
        self.size = self._log.bytes_written
        # Nobody reading: no wake-up. Waking the loop for every chunk of a task that nobody
        # watches cost the pipe's thread a GIL hand-over per chunk. Safe without a lock: ``send``
        # counts itself a reader before it reads ``size``, and ``size`` is set before this check.
        if self.readers:
            self._schedule_wake()

    def _closed(self) -> None:
        self.size = self._log.bytes_written
        if threading.get_ident() == self._loop_thread:
            self._end()
        else:
            self._loop.call_soon_threadsafe(self._end)

    def _schedule_wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._wake)
        else:
            self._loop.call_soon_threadsafe(self._wake)

    # -- loop side --------------------------------------------------------------------------
    def _wake(self) -> None:
        self._wake_pending = False
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)

    def _end(self) -> None:
        self.ended = True
        self._wake()

    def retire(self) -> None:
        """No new readers; the file is closed once the last current reader is done."""
        self.retired = True
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if self.retired and self.readers == 0 and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def send(self, response: web.StreamResponse, offset: int) -> None:
        """Write the log from ``offset`` into ``response`` until the log has ended."""
        self.readers += 1
        try:
            while True:
                end = self.size
                while offset < end:
                    n = min(end - offset, CHUNK)
                    if n <= SMALL_READ:
                        data = os.pread(self._fd, n, offset)
                    else:
                        data = await asyncio.to_thread(os.pread, self._fd, n, offset)
                    if not data:
                        break
                    await response.write(data)
                    offset += len(data)
                if self.ended and offset >= self.size:
                    return
                if offset >= self.size:
                    await asyncio.shield(self._changed)
        finally:
            self.readers -= 1
            self._close_if_unused()


class LiveLogServer:
    """One aiohttp server for every running task's live log (``register`` → URL)."""

    def __init__(self) -> None:
        self._streams: dict[str, LogStream] = {}
        # token -> loop time to retire it; insertion order is deadline order (one fixed delay)
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._retired: OrderedDict[str, None] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self._public_host = "127.0.0.1"
        self.port = 0
        self._sweep: asyncio.TimerHandle | None = None

    async def start(self, public_ip: str, port: int, fallback_port: int | None = None) -> None:
        """Listen on ``port`` (0: random; ``fallback_port`` is tried first when ``port`` is 0).

        With a ``public_ip`` (which may be a NAT address not bound here, as on clouds) the server
        listens on every interface, as generic-worker's exposer does; without, on 127.0.0.1.
        """
        app = web.Application()
        app.router.add_get("/log/{token}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        bind = None if public_ip else "127.0.0.1"
        candidates = [port] if port else [p for p in (fallback_port, 0) if p is not None]
        error: OSError | None = None
        for candidate in candidates:
            site = web.TCPSite(runner, bind, candidate, reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                error = e
                continue
            server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
            assert server is not None
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
            break
        else:
            await runner.cleanup()
            raise OSError(f"cannot listen on port {candidates[-1]}: {error}")
        self._runner = runner
        if public_ip:
            ip = ipaddress.ip_address(public_ip)
            self._public_host = f"[{ip}]" if ip.version == 6 else str(ip)

    @property
    def running(self) -> bool:
        return self._runner is not None

    def url(self, token: str) -> str:
        return f"http://{self._public_host}:{self.port}/log/{token}"

    def register(self, task_log: FollowableLog) -> str:
        """Serve ``task_log`` from now on; returns its token. Retired ``RETAIN_AFTER_END``
        seconds after the log closes."""
        loop = asyncio.get_running_loop()
        token = secrets.token_urlsafe(24)
        stream = LogStream(task_log, loop)
        self._streams[token] = stream
        task_log.on_close(lambda: loop.call_soon_threadsafe(self._retire_later, token))
        return token

    def _retire_later(self, token: str) -> None:
        if token not in self._streams:
            return
        loop = asyncio.get_running_loop()
        self._ended[token] = loop.time() + RETAIN_AFTER_END
        while len(self._ended) > MAX_ENDED_KEPT:
            self.retire(next(iter(self._ended)))
        if self._sweep is None:
            self._sweep = loop.call_at(self._ended[next(iter(self._ended))], self._retire_due)

    def _retire_due(self) -> None:
        """One timer for every finished log: retire those whose time is up, wait for the next."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._ended:
            token, deadline = next(iter(self._ended.items()))
            if deadline > now:
                self._sweep = loop.call_at(deadline, self._retire_due)
                return
            self.retire(token)

    def retire(self, token: str) -> None:
        self._ended.pop(token, None)
        stream = self._streams.pop(token, None)
        if stream is not None:
            self._retired[token] = None
            if len(self._retired) > MAX_RETIRED_TOKENS:
                self._retired.popitem(last=False)
            stream.retire()

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for token in list(self._streams):
            self.retire(token)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        stream = self._streams.get(token)
        if stream is None:
            if token in self._retired:
                return web.Response(
                    status=410, text="This log has ended; read the task's backing log artifact\n"
                )
            return web.Response(status=401, text="Access denied\n")
        offset, ranged = _start_offset(request)
        if offset is None:
            return web.Response(status=400, text="offset must be a non-negative integer\n")
        if ranged and stream.ended and offset >= stream.size > 0:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{stream.size}"})
        response = web.StreamResponse(
            status=206 if ranged else 200,
            headers={
                "Content-Type": CONTENT_TYPE,
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": "Transfer-Encoding",
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )
        if ranged and stream.ended:
            response.headers["Content-Range"] = f"bytes {offset}-{stream.size - 1}/{stream.size}"
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await stream.send(response, offset)
            await response.write_eof()
        return response


def _start_offset(request: web.Request) -> tuple[int | None, bool]:
    """(first byte to send, whether it came from a Range header); ``None`` when malformed."""
    raw = request.query.get("offset")
    if raw is not None:
        return (int(raw) if raw.isdigit() else None), False
    header = request.headers.get("Range")
    if header:
        match = _RANGE.match(header)
        if match:
            return int(match.group(1)), True
        # Other range forms (suffixes, several ranges) are ignored, as upstream ignores Range.
    return 0, False
