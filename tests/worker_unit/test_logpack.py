"""The task log's gzip copy made while the log is written (``logpack``) and the hashing behind it.

Real files and threads: a writer thread appends to a ``TaskLog`` (with a masked secret) while the
``LogPacker`` is handed each chunk; the copy must decode to exactly the bytes on disk and carry
their hashes, including chunks big enough to take the parallel-hash path, bytes written before the
packer started, and chunks it had no room to queue (both read back from the file).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import threading
from pathlib import Path

import pytest

from tcworker.digests import PARALLEL_MIN, PlainDigests
from tcworker.worker import logpack
from tcworker.worker.logpack import LogPacker
from tcworker.worker.tasklog import TaskLog


def _expected(data: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}


def test_digests_match_hashlib_for_small_and_parallel_chunks() -> None:
    pieces = [b"a" * 10, os.urandom(PARALLEL_MIN + 7), b"b" * 100, os.urandom(3 * PARALLEL_MIN), b""]
    with PlainDigests() as digests:
        for piece in pieces:
            digests.update(piece)
        assert digests.hexdigests() == _expected(b"".join(pieces))


def _attach(task_log: TaskLog, packer: LogPacker) -> None:
    """As ``LogPublication`` does: every chunk the log writes is offered with its offset."""
    task_log.add_listener(lambda data: packer.offer(task_log.bytes_written - len(data), data))


@pytest.mark.parametrize("max_queued", [logpack.MAX_QUEUED, 1000], ids=["queued", "overflowing"])
@pytest.mark.parametrize("late_start", [False, True], ids=["from-start", "late-start"])
def test_packer_follows_a_growing_log_and_matches_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_queued: int, late_start: bool
) -> None:
    monkeypatch.setattr(logpack, "MAX_QUEUED", max_queued)
    task_log = TaskLog(tmp_path / "live_backing.log")
    task_log.add_secrets(["s3cret-value"])
    if late_start:  # as LogPublication starts it once the log is big: the start is on disk only
        task_log.write(b"early s3cret-value output\n" * 500)
    packer = LogPacker(task_log.path, tmp_path)
    _attach(task_log, packer)

    def writer() -> None:
        for i in range(200):
            task_log.write(f"line {i} s3cret-value\n".encode())
        task_log.write(os.urandom(PARALLEL_MIN * 2))  # incompressible, parallel-hash sized
        task_log.info("done")

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    task_log.close()
    packed = packer.finish(task_log.bytes_written)
    try:
        on_disk = task_log.path.read_bytes()
        assert b"s3cret-value" not in on_disk
        assert gzip.decompress(packed.path.read_bytes()) == on_disk
        # Logs carry sha256 only, plus the RFC 9530 digest of the gzip bytes for the object service.
        assert packed.hashes == {"sha256": hashlib.sha256(on_disk).hexdigest()}
        sent = base64.b64encode(hashlib.sha256(packed.path.read_bytes()).digest()).decode()
        assert packed.content_digest == f"sha-256=:{sent}:"
    finally:
        packer.discard()
    assert not packed.path.exists()


def test_packer_of_an_empty_log_is_a_valid_empty_gzip(tmp_path: Path) -> None:
    task_log = TaskLog(tmp_path / "live_backing.log")
    packer = LogPacker(task_log.path, tmp_path)
    task_log.close()
    packed = packer.finish(0)
    assert gzip.decompress(packed.path.read_bytes()) == b""
    assert packed.hashes == {"sha256": hashlib.sha256(b"").hexdigest()}
    packer.discard()


def test_packer_failure_is_reported_by_finish(tmp_path: Path) -> None:
    task_log = TaskLog(tmp_path / "live_backing.log")
    packer = LogPacker(task_log.path, tmp_path)
    _attach(task_log, packer)
    packer._out.close()  # the copy's disk goes away: the next write fails in the thread
    task_log.write(os.urandom(PARALLEL_MIN * 20))  # more than the gzip copy's write buffer
    task_log.close()
    with pytest.raises(RuntimeError, match="compressing the task log failed"):
        packer.finish(task_log.bytes_written)
    packer.discard()
    assert not packer.path.exists()


def test_packer_reports_a_log_shorter_than_announced(tmp_path: Path) -> None:
    """A stretch to read from the file that is not there is an error, not a silently short copy."""
    task_log = TaskLog(tmp_path / "live_backing.log")
    packer = LogPacker(task_log.path, tmp_path)
    task_log.write(b"only this\n")
    task_log.close()
    with pytest.raises(RuntimeError, match="ends at byte 10, expected 50"):
        packer.finish(50)
    packer.discard()
