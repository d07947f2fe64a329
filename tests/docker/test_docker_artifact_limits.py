"""Issue 14 hole: on the docker engine an artifact over ``maxArtifactSizeMegabytes`` used to be
copied out of the container in full (``get_archive`` unpacked into the worker's staging) before
the size check.

A real ``tcworker run`` (docker engine, default limit 5120 MiB) runs a docker-worker task that
makes a 10 GiB sparse file: it becomes a ``too-large-file-on-worker`` error artifact decided from
the path stat Docker sends with the archive headers, and the worker process writes (far) less than
1 GiB meanwhile (``/proc/<pid>/io`` ``wchar``: unpacking writes the copy from the worker itself).
A directory member over a 1 MiB limit is skipped from its tar header the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from helpers.dockerimage import TEST_IMAGE
from helpers.submitter import Submitter, iso
from helpers.workerproc import WorkerProcess, start_worker_process

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

GIB = 1 << 30


def _written(pid: int) -> int:
    return int(psutil.Process(pid).io_counters().write_chars)


@pytest.fixture
def submitter(shared_platform: Any) -> Submitter:
    return Submitter.for_platform(shared_platform)


@pytest.fixture
def start_docker_worker(
    tmp_path_factory: pytest.TempPathFactory, shared_platform: Any, submitter: Submitter, test_image: str
) -> Iterator[Any]:
    made: list[WorkerProcess] = []

    def start(**overrides: Any) -> WorkerProcess:
        proc = start_worker_process(
            shared_platform,
            tmp_path_factory.mktemp("docker-artifact-limits"),
            engine="docker",
            dockerImage=TEST_IMAGE,
            workerType=submitter.worker_type,
            **overrides,
        )
        made.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in made:
            proc.stop()
            print(f"\n===== docker worker output (tail) =====\n{proc.tail(6000)}")


def _expires() -> str:
    return iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))


def test_a_10_gib_sparse_file_artifact_is_refused_without_being_copied(
    submitter: Submitter, start_docker_worker: Any
) -> None:
    worker = start_docker_worker()
    payload = {
        "image": TEST_IMAGE,
        "command": ["sh", "-c", "truncate -s 10G /big.bin && echo small > /small.txt"],
        "maxRunTime": 60,
        "artifacts": {
            "public/big.bin": {"type": "file", "path": "/big.bin", "expires": _expires()},
            "public/small.txt": {"type": "file", "path": "/small.txt", "expires": _expires()},
        },
    }
    written_before = _written(worker.pid)  # idle worker: what follows is this task's
    task_id = submitter.create_task(submitter.task_definition(payload, retries=0))
    run = submitter.wait_run(task_id, worker=worker, timeout=180)
    written = _written(worker.pid) - written_before
    log = submitter.log(task_id)
    assert run["state"] in ("completed", "failed"), (run, log[-3000:])
    art = submitter.queue.artifact(task_id, "0", "public/big.bin")
    assert art["storageType"] == "error" and art["reason"] == "too-large-file-on-worker", art
    assert "maxArtifactSizeMegabytes" in art["message"] and str(10 * GIB) in art["message"], art
    assert submitter.download(task_id, 0, "public/small.txt")[0] == b"small\n"
    assert written < GIB, f"the worker wrote {written} bytes while handling a 10 GiB artifact"


def test_directory_member_over_the_limit_is_skipped_from_its_header(
    submitter: Submitter, start_docker_worker: Any
) -> None:
    worker = start_docker_worker(maxArtifactSizeMegabytes=1)
    script = "mkdir /out && head -c 67108864 /dev/zero > /out/over.bin && echo s > /out/small.txt"
    payload = {
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "maxRunTime": 60,
        "artifacts": {"public/out": {"type": "directory", "path": "/out", "expires": _expires()}},
    }
    written_before = _written(worker.pid)  # idle worker: what follows is this task's
    task_id = submitter.create_task(submitter.task_definition(payload, retries=0))
    run = submitter.wait_run(task_id, worker=worker, timeout=180)
    written = _written(worker.pid) - written_before
    log = submitter.log(task_id)
    assert run["state"] in ("completed", "failed"), (run, log[-3000:])
    art = submitter.queue.artifact(task_id, "0", "public/out/over.bin")
    assert art["storageType"] == "error" and art["reason"] == "too-large-file-on-worker", art
    assert "1 MiB" in art["message"] and "67108864 bytes" in art["message"], art
    assert submitter.download(task_id, 0, "public/out/small.txt")[0] == b"s\n"
    assert written < 32 << 20, f"the worker wrote {written} bytes for a 64 MiB member it should skip"
