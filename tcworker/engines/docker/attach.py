"""A container's output, read in large chunks from its attach socket and handed to the loop.

docker-py's ``logs(stream=True)`` reads a TTY container's output one byte at a time
(``_stream_raw_result`` uses ``chunk_size=1``), and each byte became one call on the event loop: a
task writing 16 MiB did not finish in ten minutes. Instead the engine attaches to the container
*before* starting it (``POST /containers/{id}/attach``, hijacked connection, as ``docker run``
does), so nothing the command writes is missed and nothing has to be read back from the log
driver; a worker thread then reads the raw socket up to ``CHUNK_BYTES`` at a time and hands each
chunk to the event loop. A TTY container's stream is its raw output; without a TTY it is Docker's
multiplexed stream (8-byte frame headers), whose frames are passed on in order.

Back-pressure: at most ``MAX_CHUNKS_IN_FLIGHT`` chunks wait on the loop at any time, so a task
that writes faster than the log can take does not pile its output up in the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import docker
from docker.utils.socket import frames_iter, read

from tcworker.engines.base import LogSink

CHUNK_BYTES = 64 * 1024
MAX_CHUNKS_IN_FLIGHT = 16
_SLOT_POLL_SECONDS = 1.0  # how often a blocked reader checks that the loop still runs


class AttachedOutput:
    """The output stream of one container, attached before it starts (see the module docstring)."""

    def __init__(self, sock: Any, tty: bool) -> None:
        self._sock = sock
        self._tty = tty
        self._closed = False

    @classmethod
    def open(cls, api: docker.APIClient, container_id: str, tty: bool) -> AttachedOutput:
        """Attach to stdout and stderr of a created, not yet started container (blocking).

        Attaching before the start matters twice: no output is lost, and the HTTP response's
        read buffer cannot hold stream bytes that a raw socket read would then miss.
        """
        sock = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
        return cls(sock, tty)

    def pump(self, loop: asyncio.AbstractEventLoop, sink: LogSink) -> int:
        """Read until the container closes its output, handing chunks to ``sink.write`` on ``loop``
        in order (blocking: run it in a thread of its own, ``threads.in_own_thread``). Returns the
        number of bytes read."""
        slots = threading.Semaphore(MAX_CHUNKS_IN_FLIGHT)

        def deliver(chunk: bytes) -> None:
            try:
                sink.write(chunk)
            finally:
                slots.release()

        total = 0
        try:
            for chunk in self._chunks():
                while not slots.acquire(timeout=_SLOT_POLL_SECONDS):
                    if loop.is_closed():
                        return total
                total += len(chunk)
                loop.call_soon_threadsafe(deliver, chunk)
        finally:
            self.close()
        return total

    def _chunks(self) -> Any:
        if self._tty:
            while chunk := read(self._sock, CHUNK_BYTES):
                yield chunk
        else:
            for _stream, frame in frames_iter(self._sock, tty=False):
                if frame:
                    yield frame

    def close(self) -> None:
        """Close the socket (idempotent); a ``pump`` blocked in a read then ends."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        response = getattr(self._sock, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
