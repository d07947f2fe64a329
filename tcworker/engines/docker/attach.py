"""A container's output, read in large chunks from its attach socket and handed to the loop.

docker-py's ``logs(stream=True)`` reads a TTY container's output one byte at a time
(``_stream_raw_result`` uses ``chunk_size=1``), and each byte became one call on the event loop: a
task writing 16 MiB did not finish in ten minutes. Instead the engine attaches to the container
*before* starting it (``POST /containers/{id}/attach``, hijacked connection, as ``docker run``
does), so nothing the command writes is missed and nothing has to be read back from the log
driver; a worker thread then reads the raw socket up to ``CHUNK_BYTES`` at a time and hands each
chunk to the event loop. A TTY container's stream is its raw output; without a TTY it is Docker's
multiplexed stream (8-byte frame headers), which ``FrameDemuxer`` strips from each chunk as it comes
(frame by frame, never byte by byte: a frame's payload is one slice of the chunk), handing on the
stdout and stderr bytes in the order the daemon sent them. docker-py's ``frames_iter`` would read
every frame with two socket reads of its own: a task writing many small lines made thousands of
small reads and as many chunks for the loop.

Back-pressure: at most ``MAX_CHUNKS_IN_FLIGHT`` chunks wait on the loop at any time, so a task
that writes faster than the log can take does not pile its output up in the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from typing import Any

import docker
from docker.utils.socket import read

from tcworker.engines.base import LogSink

CHUNK_BYTES = 64 * 1024
MAX_CHUNKS_IN_FLIGHT = 16
_SLOT_POLL_SECONDS = 1.0  # how often a blocked reader checks that the loop still runs
FRAME_HEADER = struct.Struct(">BxxxL")  # stream (0 stdin, 1 stdout, 2 stderr), 3 zero bytes, size
STDERR = 2
OUTPUT_STREAMS = frozenset({1, STDERR})
MAX_DIVERTED = 4096


class MultiplexError(OSError):
    """The attach stream of a non-TTY container is not Docker's multiplexed format."""


class FrameDemuxer:
    """Docker's multiplexed attach stream → the container's output bytes, in the daemon's order.

    ``feed`` takes whatever one socket read returned (frames may start, end or be split anywhere
    in it, a header too) and returns the payload bytes it completed, stdout and stderr
    interleaved exactly as framed. The work per call is per frame: the payload of a frame is a
    slice of the chunk, joined once. With ``divert_stderr`` the stderr frames are kept aside in
    ``diverted`` (the first ``MAX_DIVERTED`` bytes) instead: a generic payload's command writes
    its stderr into stdout's pipe, so that stream carries only its wrapper's diagnostics
    (``onepipe``).
    """

    def __init__(self, divert_stderr: bool = False) -> None:
        self._header = bytearray()  # a header split across two reads
        self._left = 0  # payload bytes of the current frame still to come
        self._divert = divert_stderr
        self._to_log = True  # where the current frame's payload goes
        self.diverted = bytearray()

    @property
    def at_frame_boundary(self) -> bool:
        """True when no frame is half read (a stream that ends elsewhere was cut short)."""
        return self._left == 0 and not self._header

    def feed(self, data: bytes) -> bytes:
        view = memoryview(data)
        end = len(view)
        pos = 0
        parts: list[memoryview] = []
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                if self._to_log:
                    parts.append(view[pos : pos + take])
                elif len(self.diverted) < MAX_DIVERTED:
                    self.diverted += view[pos : pos + min(take, MAX_DIVERTED - len(self.diverted))]
                pos += take
                self._left -= take
                continue
            if not self._header and end - pos >= FRAME_HEADER.size:
                stream, size = FRAME_HEADER.unpack_from(view, pos)
                pos += FRAME_HEADER.size
            else:
                take = min(FRAME_HEADER.size - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) < FRAME_HEADER.size:
                    break
                stream, size = FRAME_HEADER.unpack(self._header)
                self._header.clear()
            if stream not in OUTPUT_STREAMS:
                raise MultiplexError(
                    f"unexpected stream {stream} in a container's multiplexed output (frame of {size} bytes)"
                )
            self._left = size
            self._to_log = not (self._divert and stream == STDERR)
        if len(parts) == 1:
            return bytes(parts[0])
        return b"".join(parts)


class AttachedOutput:
    """The output stream of one container, attached before it starts (see the module docstring)."""

    def __init__(self, sock: Any, tty: bool, divert_stderr: bool = False) -> None:
        self._sock = sock
        self._tty = tty
        self._demuxer = None if tty else FrameDemuxer(divert_stderr)
        self._closed = False

    @property
    def diverted_stderr(self) -> bytes:
        """What the container wrote to stderr when it was diverted (``FrameDemuxer``)."""
        return bytes(self._demuxer.diverted) if self._demuxer is not None else b""

    @classmethod
    def open(
        cls, api: docker.APIClient, container_id: str, tty: bool, divert_stderr: bool = False
    ) -> AttachedOutput:
        """Attach to stdout and stderr of a created, not yet started container (blocking).

        Attaching before the start matters twice: no output is lost, and the HTTP response's
        read buffer cannot hold stream bytes that a raw socket read would then miss.
        """
        sock = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
        return cls(sock, tty, divert_stderr)

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

    def _chunks(self) -> Iterator[bytes]:
        """The output in the chunks the socket gave (minus the frame headers without a TTY)."""
        demuxer = self._demuxer
        while True:
            chunk = read(self._sock, CHUNK_BYTES)
            if chunk is None:  # EINTR and the like: read again
                continue
            if not chunk:
                break
            if demuxer is not None:
                chunk = demuxer.feed(chunk)
                if not chunk:
                    continue
            yield chunk
        if demuxer is not None and not demuxer.at_frame_boundary:
            raise MultiplexError("a container's output stream ended inside a frame")

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
