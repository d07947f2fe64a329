"""Gzip + hash the task log while it is being written, so publishing it is only the PUT.

A task that prints gigabytes used to pay for compressing and hashing its whole log *after* the
command ended (≈12 s per GiB). ``LogPacker`` follows the log file from a background thread instead,
like ``tail -f``: woken by the task log on every write, it reads what is on disk (never what is
in memory, so the copy is exactly the masked bytes the log holds) in big chunks and feeds them
through ``GzipHashWriter`` at ``LOG_LEVEL``. When the log is closed, ``finish`` drains the rest
and returns the gzip copy with the hashes of the plain log. Nothing is kept in memory beyond one
chunk, and the thread never touches the event loop; ``finish`` blocks, so call it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from tcworker.tcapi.gzip_upload import CHUNK, LOG_LEVEL, GzipHashWriter, Packed

log = logging.getLogger(__name__)

IDLE_POLL = 0.5  # seconds; a safety net only, writes wake the thread
WAKE_EVERY = 1 << 20  # bytes written before the thread is woken (it reads in CHUNK-sized pieces)


class LogPacker:
    """Follows ``source`` (an open, growing file) into a gzip temp file in ``tmp_dir``."""

    def __init__(self, source: Path, tmp_dir: Path, level: int = LOG_LEVEL) -> None:
        self._source = open(source, "rb", buffering=0)  # noqa: SIM115 - closed by the thread
        fd, name = tempfile.mkstemp(prefix="log-", suffix=".gz", dir=tmp_dir)
        self.path = Path(name)
        self._out = os.fdopen(fd, "wb", buffering=CHUNK)
        self._writer = GzipHashWriter(self._out, level)
        self._wake = threading.Event()
        self._unread = 0  # bytes written since the last wake (approximate, writer side only)
        self._closed = threading.Event()
        self._stop = False
        self._hashes: dict[str, str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tcw-logpack", daemon=True)
        self._thread.start()

    def wake(self, data: bytes = b"") -> None:
        """New bytes are in the file (a ``TaskLog`` listener: cheap, called under the log's lock).

        The thread is woken once a big piece has accumulated, not on every write: waking it for
        every pipe read made it fight the event loop for the GIL (a third of the worker's CPU for
        a fast writer). What is left is read within ``IDLE_POLL`` or at ``finish``."""
        self._unread += len(data)
        if self._unread >= WAKE_EVERY or not data:
            self._unread = 0
            self._wake.set()

    def finish(self) -> Packed:
        """After the log is closed: compress the rest and return the copy (blocking)."""
        self._closed.set()
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"compressing the task log failed: {self._error}") from self._error
        assert self._hashes is not None
        return Packed(self.path, self._hashes, self._writer.content_digest)

    def discard(self) -> None:
        """Stop without finishing and delete the copy (blocking; safe to call after ``finish``)."""
        self._stop = True
        self._closed.set()
        self._wake.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            while not self._stop:
                closed = self._closed.is_set()  # read before the read that may hit the end
                chunk = self._source.read(CHUNK)
                if chunk:
                    self._writer.write(chunk)
                elif closed:
                    self._hashes = self._writer.finish()
                    return
                else:
                    self._wake.wait(IDLE_POLL)
                    self._wake.clear()
        except BaseException as e:  # reported by finish(); the upload falls back to compressing
            self._error = e
            log.warning("following the task log for gzip failed: %s", e)
        finally:
            self._writer.close()
            with contextlib.suppress(OSError):
                self._out.close()
            self._source.close()
