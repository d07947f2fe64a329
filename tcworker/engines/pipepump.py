"""A command's output pipe, drained straight into the log sink: by the event loop while the output
is small, by a thread of its own once it is not.

The pipe used to be read by the event loop alone (``connect_read_pipe``): every chunk was a loop
iteration, and the copy into the task log (masking, file write, live-log wake-up) ran on the loop
thread between its other work. A task that writes gigabytes keeps that copy busy all the time,
so past ``HANDOFF_BYTES`` it runs on one thread per command that does nothing else: it reads up to
``READ_SIZE`` bytes per ``read`` (the pipe is enlarged to match) and hands each chunk to
``sink.write`` (``TaskLog`` is thread-safe; masking, the disk write and the listeners run there).
The loop then only hears about the end (``eof``); ``poll`` waits for data, with a second pipe to
stop a pump whose output pipe never closes (an escaped process still holding it). Most commands
write a few lines: for them a thread (its start, and the GIL passed back and forth with the loop
at each of its system calls) cost more than the reads themselves, so the loop reads the first
``HANDOFF_BYTES`` itself, one ``read`` per readiness, and starts the thread only when the output
goes on.

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
HANDOFF_BYTES = 256 * 1024  # output read on the loop before a thread takes over
LOOP_READ = 64 * 1024  # bytes per read on the loop (bounds the loop's time per chunk)


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
        self.eof: asyncio.Future[None] = loop.create_future()
        self._thread: threading.Thread | None = None
        self._loop_only = False  # no thread could be started: the loop reads it all
        self._stop_read = self._stop_write = -1  # the thread's stop pipe, made with the thread
        loop.add_reader(fd, self._read_on_loop)

    @property
    def threaded(self) -> bool:
        """Whether a thread drains the pipe now (``close`` then blocks until it is joined)."""
        return self._thread is not None

    def _read_on_loop(self) -> None:
        """One read per readiness while the output is small; the thread takes over past
        ``HANDOFF_BYTES`` (reading on from where the loop stopped: nothing is lost or reordered)."""
        try:
            data = os.read(self._fd, LOOP_READ)
        except BlockingIOError:
            return
        except OSError as e:
            log.warning("reading a command's output failed: %s", e)
            data = b""
        if not data:
            self._loop.remove_reader(self._fd)
            self._set_eof()
            return
        self.bytes_read += len(data)
        self._deliver(data)
        if self.bytes_read >= HANDOFF_BYTES and not self._loop_only:
            self._hand_over()

    def _hand_over(self) -> None:
        """Start the thread; if the host refuses one (threads or descriptors exhausted) the loop
        reads on: a command must never be left blocked on a full pipe."""
        thread = threading.Thread(target=self._run, name="tcw-pipe", daemon=True)
        try:
            self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            self._loop.remove_reader(self._fd)
            thread.start()
        except (OSError, RuntimeError) as e:
            log.warning("cannot start the output pump thread (%s); the event loop reads on", e)
            self._loop_only = True
            for fd in (self._stop_read, self._stop_write):
                if fd >= 0:
                    os.close(fd)
            self._stop_read = self._stop_write = -1
            self._loop.add_reader(self._fd, self._read_on_loop)
            return
        self._thread = thread

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
        """Stop reading (the rest of the pipe is left unread) and wait for the thread, if one
        took over (blocking; quick: the thread is in ``poll`` or delivering one chunk; without
        one, call it on the loop's thread). Idempotent."""
        if self._fd < 0:
            return
        if self._thread is None:
            self._loop.remove_reader(self._fd)
        else:
            self._stopping.set()
            with contextlib.suppress(OSError):
                os.write(self._stop_write, b"x")
            self._thread.join()
        for fd in (self._fd, self._stop_read, self._stop_write):
            if fd >= 0:
                os.close(fd)
        self._fd = -1
