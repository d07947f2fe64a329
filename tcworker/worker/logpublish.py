"""LogPublication: one run's task log on its way to the queue, with as little left for after the run.

Publishing the log sits between the last command and the report, so every queue round trip in it
delays the resolution. A log that grows past ``FOLLOW_AFTER`` is therefore gzipped and hashed as it
is written (``logpack``, handed each chunk the log writes; a smaller one is packed in one short
pass at the end, which costs less than a packer thread). The backing log's ``object`` artifact is created
only once the log is complete and closed — in parallel with packing its last bytes — so the
artifact is never listed while it has no content (while the task runs, the live log serves it);
then the object upload and ``finishArtifact``. The live log's link is the live-log feature's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from tcworker.tcapi.gzip_upload import LOG_LEVEL, Packed, compress
from tcworker.tcapi.upload import ArtifactPublisher
from tcworker.worker.logpack import LogPacker
from tcworker.worker.tasklog import TaskLog

log = logging.getLogger(__name__)

LOG_CONTENT_TYPE = "text/plain; charset=utf-8"
FOLLOW_AFTER = 256 * 1024  # bytes of log before a LogPacker thread follows it
PACK_INLINE = 32 * 1024  # a log up to this size is packed on the loop (≤ ~0.15 ms; 0.04 ms for 2 KB)


class LogPublication:
    """The backing log of one run (``run`` is ``taskId/runId`` for messages)."""

    def __init__(self, publisher: ArtifactPublisher, expires: str, scratch_dir: Path, run: str) -> None:
        self.publisher = publisher
        self.expires = expires
        self.scratch_dir = scratch_dir
        self.run = run
        self._log: TaskLog | None = None  # set by follow(): the log will be gzip-encoded
        self._log_path: Path | None = None
        self._packer: LogPacker | None = None
        self._small: Packed | None = None  # the end-of-run gzip copy of a small log

    def follow(self, task_log: TaskLog) -> None:
        """Prepare the gzip copy of a log that will be published gzip-encoded."""
        if self.publisher.gzip:
            self._log = task_log
            self._log_path = task_log.path
            task_log.add_listener(self._grown)

    def _grown(self, data: bytes) -> None:
        """Log listener (cheap, under the log's lock, after ``data`` reached the file): hand the
        chunk to the packer, started once the log is big."""
        assert self._log is not None
        written = self._log.bytes_written  # already counts ``data``
        if self._packer is not None:
            self._packer.offer(written - len(data), data)
            return
        if self._log_path is None or written < FOLLOW_AFTER:
            return
        try:
            # Its first offer is the next chunk; what is on disk before it, it reads from the file.
            self._packer = LogPacker(self._log_path, self.scratch_dir)
        except OSError as e:  # the log is then compressed after the run instead
            log.warning("cannot follow the task log for gzip: %s", e)
            self._log_path = None

    async def publish(
        self, task_log: TaskLog, backing: str, on_created: Callable[[], None] | None = None
    ) -> None:
        """Upload the closed log as ``backing``; raises ``TaskError``. ``on_created`` is called
        once its artifact exists, before the upload (the run's held queue calls start then)."""
        packed, created = await asyncio.gather(
            self._packed(), self.publisher.create_object(backing, LOG_CONTENT_TYPE, self.expires)
        )
        if on_created is not None:
            on_created()
        await self.publisher.upload_file(
            backing, task_log.path, LOG_CONTENT_TYPE, self.expires, "gzip", packed=packed, created=created
        )

    @property
    def small(self) -> bool:
        """The log is short and has no packer: what is left of it is a few KiB."""
        return self._packer is None and (self._log is None or self._log.bytes_written <= PACK_INLINE)

    def discard(self) -> None:
        """Stop following the log and delete its gzip copy (blocking: call it in a thread)."""
        if self._packer is not None:
            self._packer.discard()
        if self._small is not None and self._small.path is not None:
            self._small.path.unlink(missing_ok=True)

    async def _packed(self) -> Packed | None:
        """The log's gzip copy once the log is closed; None: the upload compresses it itself."""
        if self._packer is not None:
            try:
                assert self._log is not None
                return await asyncio.to_thread(self._packer.finish, self._log.bytes_written)
            except RuntimeError as e:
                log.warning("%s; compressing it after the run instead", e)
                return None
        if self._log_path is None:
            return None
        try:
            if self._log is not None and self._log.bytes_written <= PACK_INLINE:
                # a short log: read + gzip + hash cost less than the thread trip (its GIL hand-overs)
                self._small = compress(self._log_path, self.scratch_dir, LOG_LEVEL)
            else:
                self._small = await asyncio.to_thread(compress, self._log_path, self.scratch_dir, LOG_LEVEL)
        except OSError as e:
            log.warning("cannot compress the task log: %s; the upload retries it", e)
            return None
        return self._small
