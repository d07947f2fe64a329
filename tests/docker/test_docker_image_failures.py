"""Full-worker tests (issue 14): a task image that cannot be had resolves the same way every time.

The rule (README, "Where tcworker differs"): an image the **task** names (docker-worker payload:
a name, a ``task-image`` artifact, an ``indexed-image``) that cannot be pulled, downloaded or
loaded is the task's fault → ``failed`` with docker-worker's ``Pulling docker image has failed.``
(spec §3.2, §3.7); the image the **worker** supplies for generic-worker payloads (``dockerImage``)
is the worker's fault → ``exception/internal-error`` naming the config key (spec §1.10's set-up
failure row). Before this issue an artifact that was not an image tarball ended internal-error
(the Docker SDK's ``ImageLoadError`` escaped the failure policy).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.dockerimage import TEST_IMAGE
from helpers.submitter import Submitter, iso
from helpers.workerproc import WorkerProcess, start_worker_process

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

PULL_FAILED = "Pulling docker image has failed."


@pytest.fixture(scope="module")
def submitter(shared_platform: Any) -> Submitter:
    return Submitter.for_platform(shared_platform)


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, shared_platform: Any, submitter: Submitter, test_image: str
) -> Iterator[WorkerProcess]:
    proc = start_worker_process(
        shared_platform,
        tmp_path_factory.mktemp("docker-image-failures"),
        engine="docker",
        dockerImage=TEST_IMAGE,
        workerType=submitter.worker_type,
    )
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\n===== docker worker output (tail) =====\n{proc.tail(8000)}")


def _run(submitter: Submitter, worker: WorkerProcess, payload: dict[str, Any]) -> tuple[str, dict]:
    task_id = submitter.create_task(submitter.task_definition(payload, retries=0))
    return task_id, submitter.wait_run(task_id, timeout=120, worker=worker)


def _artifact_task(submitter: Submitter, worker: WorkerProcess, script: str, path: str) -> str:
    """A task that leaves ``path`` in its container, published as ``public/image.tar``."""
    expires = iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    payload = {
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "maxRunTime": 60,
        "artifacts": {"public/image.tar": {"type": "file", "path": path, "expires": expires}},
    }
    task_id, run = _run(submitter, worker, payload)
    assert run["state"] == "completed", submitter.log(task_id)
    return task_id


@pytest.mark.parametrize(
    "script",
    [
        "echo 'this is not an image' > /image.tar",  # not even a tar
        "echo hello > /hello.txt && tar -cf /image.tar /hello.txt",  # a tar without manifest.json
    ],
    ids=["text", "tar-without-manifest"],
)
def test_task_image_that_is_not_an_image_fails_the_task(
    submitter: Submitter, worker: WorkerProcess, script: str
) -> None:
    source = _artifact_task(submitter, worker, script, "/image.tar")
    image = {"type": "task-image", "taskId": source, "path": "public/image.tar"}
    task_id, run = _run(submitter, worker, {"image": image, "command": ["true"], "maxRunTime": 60})
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    assert PULL_FAILED in log and "public/image.tar" in log, log[-3000:]
    # the worker is unaffected: the next task runs
    ok_id, ok = _run(submitter, worker, {"image": TEST_IMAGE, "command": ["true"], "maxRunTime": 60})
    assert ok["state"] == "completed", submitter.log(ok_id)


def test_missing_task_image_artifact_and_index_entry_fail_the_task(
    submitter: Submitter, worker: WorkerProcess
) -> None:
    source = _artifact_task(submitter, worker, "echo x > /x", "/x")
    for image in (
        {"type": "task-image", "taskId": source, "path": "public/no-such-image.tar"},
        {"type": "indexed-image", "namespace": "tcworker.test.no.such.namespace", "path": "public/image.tar"},
        "tcworker-test/no-such-image:never",
    ):
        task_id, run = _run(submitter, worker, {"image": image, "command": ["true"], "maxRunTime": 60})
        log = submitter.log(task_id)
        assert run["state"] == "failed", (image, run, log[-3000:])
        assert PULL_FAILED in log, (image, log[-3000:])


def test_worker_image_for_generic_payloads_that_cannot_be_had_is_internal_error(
    tmp_path_factory: pytest.TempPathFactory, shared_platform: Any, test_image: str
) -> None:
    submitter = Submitter.for_platform(shared_platform)
    worker = start_worker_process(
        shared_platform,
        tmp_path_factory.mktemp("docker-bad-worker-image"),
        engine="docker",
        dockerImage="tcworker-test/no-such-worker-image:never",
        workerType=submitter.worker_type,
    )
    try:
        task_id = submitter.create_task(
            submitter.task_definition({"command": [["true"]], "maxRunTime": 60}, retries=0)
        )
        run = submitter.wait_run(task_id, timeout=120, worker=worker)
        log = submitter.log(task_id)
        assert (run["state"], run.get("reasonResolved")) == ("exception", "internal-error"), (
            run,
            log[-3000:],
        )
        assert "dockerImage" in log and "tcworker-test/no-such-worker-image:never" in log, log[-3000:]
        assert worker.running
    finally:
        worker.stop()
