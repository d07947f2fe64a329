"""Gzip + hash the task log while it is being written, so publishing it is only the PUT.

A task that prints gigabytes used to pay for compressing and hashing its whole log *after* the
command ended (≈12 s per GiB). ``LogPacker`` packs it on a background thread while it grows: the
task log hands it every chunk it has just written (the masked bytes, exactly what is on disk,
``offer``), and the thread feeds them through ``GzipHashWriter`` at ``LOG_LEVEL`` while they are
still in memory and in the CPU's cache. Reading them back from the file instead cost a second
copy of every byte and kept three threads trading the GIL (≈0.4 s of CPU per GiB).

Memory stays bounded: chunks wait in a queue of at most ``MAX_QUEUED`` bytes; when the thread
falls that far behind, ``offer`` drops the chunk and the thread later reads that stretch from the
file instead (every chunk carries its offset in the log, so a gap is a range to read from disk).
The same covers the bytes written before the packer started. When the log is closed, ``finish``
packs what is left and returns the gzip copy with the hashes of the plain log. The thread never
touches the event loop; ``finish`` blocks, so call it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

from tcworker.tcapi.gzip_upload import CHUNK, LOG_LEVEL, GzipHashWriter, Packed

log = logging.getLogger(__name__)

MAX_QUEUED = 64 << 20  # bytes of log waiting for the packer before it reads them from disk instead

_END = -1  # queue item offset: the log is closed (its data is the final size)
_STOP = -2  # queue item offset: stop at once (discard)


class LogPacker:
    """Packs ``source`` (the growing log file) into a gzip temp file in ``tmp_dir``."""

    def __init__(self, source: Path, tmp_dir: Path, level: int = LOG_LEVEL) -> None:
        self._source = open(source, "rb", buffering=0)  # noqa: SIM115 - closed by the thread
        fd, name = tempfile.mkstemp(prefix="log-", suffix=".gz", dir=tmp_dir)
        self.path = Path(name)
        self._out = os.fdopen(fd, "wb", buffering=CHUNK)
        self._writer = GzipHashWriter(self._out, level)
        self._queue: queue.SimpleQueue[tuple[int, bytes | int]] = queue.SimpleQueue()
        self._queued = 0  # bytes in the queue (updated under _lock)
        self._lock = threading.Lock()
        self._hashes: dict[str, str] | None = None
        self._error: BaseException | None = None
        self._done = False  # stopped, failed or finished: offers are ignored
        self._thread = threading.Thread(target=self._run, name="tcw-logpack", daemon=True)
        self._thread.start()

    def offer(self, offset: int, data: bytes) -> None:
        """``data`` was just written at ``offset`` of the log (a ``TaskLog`` listener's call, under
        the log's lock, so offers arrive in order). Never blocks: when too much is queued the
        chunk is left for the thread to read from the file."""
        with self._lock:
            if self._done or self._queued + len(data) > MAX_QUEUED:
                return
            self._queued += len(data)
        self._queue.put((offset, data))

    def finish(self, size: int) -> Packed:
        """After the log is closed at ``size`` bytes: pack the rest and return the copy (blocking)."""
        self._queue.put((_END, size))
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"compressing the task log failed: {self._error}") from self._error
        assert self._hashes is not None
        return Packed(self.path, self._hashes, self._writer.content_digest)

    def discard(self) -> None:
        """Stop without finishing and delete the copy (blocking; safe to call after ``finish``)."""
        self._done = True  # the thread stops at its next chunk, not after the whole queue
        self._queue.put((_STOP, 0))
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        packed = 0  # bytes of the log packed so far
        try:
            while True:
                offset, item = self._queue.get()
                if offset == _STOP or self._done:
                    return
                if offset == _END:
                    assert isinstance(item, int)
                    self._from_file(packed, item)
                    self._hashes = self._writer.finish()
                    return
                assert isinstance(item, bytes)
                with self._lock:
                    self._queued -= len(item)
                if offset > packed:  # a stretch that was not queued: it is on disk
                    self._from_file(packed, offset)
                self._writer.write(item)
                packed = offset + len(item)
        except BaseException as e:  # reported by finish(); the upload falls back to compressing
            self._error = e
            log.warning("packing the task log for gzip failed: %s", e)
        finally:
            with self._lock:
                self._done = True
            self._writer.close()
            with contextlib.suppress(OSError):
                self._out.close()
            self._source.close()

    def _from_file(self, start: int, end: int) -> None:
        """Pack bytes ``start``..``end`` of the log from the file."""
        while start < end:
            chunk = os.pread(self._source.fileno(), min(CHUNK, end - start), start)
            if not chunk:
                raise OSError(f"the task log ends at byte {start}, expected {end}")
            self._writer.write(chunk)
            start += len(chunk)
