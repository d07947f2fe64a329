"""Issue 14 hole: on the multiuser engine an artifact over ``maxArtifactSizeMegabytes`` used to be
copied out in full (by the task-user helper, into the worker's staging) before the size check.

A real ``tcworker run`` (multiuser, default limit 5120 MiB) runs a task that makes a 10 GiB sparse
file and a directory holding another one: both become ``too-large-file-on-worker`` error artifacts
and the worker process writes (far) less than 1 GiB while handling them (``/proc/<pid>/io``
``wchar``: a staged copy is written by the worker itself, so it would show there).
"""

from __future__ import annotations

from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.timeout(240)

GIB = 1 << 30


def _written(pid: int) -> int:
    """Bytes the worker process has written through write(2) & co. so far."""
    return int(psutil.Process(pid).io_counters().write_chars)


def test_oversize_artifacts_are_refused_without_being_copied(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser")
    make = (
        "truncate -s 10G big.bin && mkdir out && truncate -s 10G out/huge.bin && printf small > out/small.txt"
    )
    written_before = _written(worker.pid)  # idle worker: what follows is this task's
    task_id = submitter.create(
        {
            "command": [["sh", "-c", make]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "big.bin", "name": "public/big.bin"},
                {"type": "directory", "path": "out", "name": "public/out", "optional": True},
            ],
        }
    )
    run = submitter.wait_run(task_id, worker=worker, timeout=180)
    written = _written(worker.pid) - written_before
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])  # the required one is an error artifact
    for name in ("public/big.bin", "public/out/huge.bin"):
        art = submitter.queue.artifact(task_id, "0", name)
        assert art["storageType"] == "error" and art["reason"] == "too-large-file-on-worker", (name, art)
        assert "maxArtifactSizeMegabytes" in art["message"] and str(10 * GIB) in art["message"], art
    assert submitter.download(task_id, 0, "public/out/small.txt")[0] == b"small"
    assert written < GIB, f"the worker wrote {written} bytes while handling two 10 GiB artifacts"
