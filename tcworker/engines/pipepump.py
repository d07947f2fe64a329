"""A command's output pipe, drained by a thread of its own straight into the log sink.

The pipe used to be read by the event loop (``connect_read_pipe``): every chunk was a loop
iteration, and the copy into the task log (masking, file write, live-log wake-up) ran on the loop
thread between its other work. A task that writes gigabytes keeps that copy busy all the time,
so it now runs on one thread per command that does nothing else: it reads up to ``READ_SIZE``
bytes per ``read`` (the pipe is enlarged to match) and hands each chunk to ``sink.write``
(``TaskLog`` is thread-safe; masking, the disk write and the listeners run here). The loop only
hears about the end (``eof``). ``poll`` waits for data, with a second pipe to stop a pump whose
output pipe never closes (an escaped process still holding it).

There is no pause to let small writes pile up: at the pipe's 1 MiB, a 2 ms pause after each short
read capped a fast writer at ~350 MiB/s on an idle machine (the writer blocks on the full pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading

from tcworker.engines.base import LogSink

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20  # bytes per read; the output pipe is enlarged to this size


class PipePump:
    """Drains ``fd`` (the read end of a command's output pipe; the pump owns it) into ``sink``."""

    def __init__(self, fd: int, sink: LogSink, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._sink = sink
        self._loop = loop
        self._broken = False
        self._stopping = threading.Event()
        self.bytes_read = 0
        os.set_blocking(fd, False)
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.eof: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name="tcw-pipe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        try:
            while not self._stopping.is_set():
                try:
                    data = os.read(self._fd, READ_SIZE)
                except BlockingIOError:
                    ready = {fd for fd, _ in poller.poll()}
                    if self._stop_read in ready:
                        return
                    continue
                if not data:
                    return
                self.bytes_read += len(data)
                self._deliver(data)
        except OSError as e:
            log.warning("reading a command's output failed: %s", e)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._set_eof)

    def _deliver(self, data: bytes) -> None:
        """A failing sink is logged once; the rest is drained and dropped, so the command never
        blocks on a full pipe."""
        if self._broken:
            return
        try:
            self._sink.write(data)
        except Exception:
            self._broken = True
            log.exception("task log sink failed; dropping the rest of the command's output")

    def _set_eof(self) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def close(self) -> None:
        """Stop reading (the rest of the pipe is left unread) and wait for the thread (blocking;
        quick: the thread is in ``poll`` or delivering one chunk). Idempotent."""
        if self._fd < 0:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_read, self._stop_write):
            os.close(fd)
        self._fd = -1
