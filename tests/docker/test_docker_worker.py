"""Full-worker tests of ``engine: docker`` (issue 5, acceptance 1).

A real ``tcworker run`` process with ``"engine": "docker"`` claims docker-worker tasks from a real
platform process (``shared_platform``); tasks are submitted and checked with the official client
(the end-to-end harness of ``tests/e2e``). One worker serves the whole module on its own task queue.
"""

from __future__ import annotations

import re
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import docker
import pytest
import slugid
import taskcluster
from helpers.dockerimage import TEST_IMAGE, import_image
from helpers.gpg import GpgKey, make_gpg_key
from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess, start_worker_process

pytestmark = pytest.mark.docker

VOLUME_IMAGE = "tcworker-test/with-volume:latest"


@pytest.fixture(scope="module")
def submitter(shared_platform: Any) -> Submitter:
    return Submitter.for_platform(shared_platform)


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory,
    shared_platform: Any,
    submitter: Submitter,
    test_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[WorkerProcess]:
    import_image(docker_client, VOLUME_IMAGE, changes=["VOLUME /data"])
    proc = start_worker_process(
        shared_platform,
        tmp_path_factory.mktemp("docker-worker"),
        engine="docker",
        dockerImage=TEST_IMAGE,
        workerType=submitter.worker_type,
        workerGroup="docker-tests",
    )
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\n===== docker worker output (tail) =====\n{proc.tail(8000)}")


def _payload(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"image": TEST_IMAGE, "command": command, "maxRunTime": 60, **extra}


def _run(
    submitter: Submitter,
    worker: WorkerProcess,
    payload: dict[str, Any],
    routes: list[str] | None = None,
    **kw: Any,
) -> tuple[str, dict]:
    task = submitter.task_definition(payload, retries=0, **kw)
    task["routes"] = list(routes or [])
    task_id = submitter.create_task(task)
    return task_id, submitter.wait_run(task_id, timeout=90, worker=worker)


def test_container_task_completes_and_its_log_holds_the_output(
    submitter: Submitter, worker: WorkerProcess
) -> None:
    task_id, run = _run(
        submitter, worker, _payload(["sh", "-c", "echo hello-from-container $TASK_ID/$RUN_ID"])
    )
    assert run["state"] == "completed", submitter.log(task_id)
    assert f"hello-from-container {task_id}/0" in submitter.log(task_id)


def test_non_zero_exit_fails_the_task(submitter: Submitter, worker: WorkerProcess) -> None:
    task_id, run = _run(submitter, worker, _payload(["sh", "-c", "echo about-to-fail; exit 5"]))
    assert run["state"] == "failed"
    assert "about-to-fail" in submitter.log(task_id)


def test_exit_code_listed_in_retry_is_intermittent_task(submitter: Submitter, worker: WorkerProcess) -> None:
    task_id, run = _run(submitter, worker, _payload(["sh", "-c", "exit 42"], onExitStatus={"retry": [42]}))
    assert (run["state"], run.get("reasonResolved")) == ("exception", "intermittent-task")


def test_max_run_time_kills_the_container_and_fails(submitter: Submitter, worker: WorkerProcess) -> None:
    task_id, run = _run(submitter, worker, _payload(["sh", "-c", "echo sleeping; sleep 300"], maxRunTime=3))
    assert run["state"] == "failed"
    assert "Task timeout after 3 seconds. Force killing container." in submitter.log(task_id)


def test_file_directory_and_missing_artifacts(submitter: Submitter, worker: WorkerProcess) -> None:
    script = (
        "mkdir -p /out/d/sub && echo one > /out/f.txt && echo two > /out/d/a && echo three > /out/d/sub/b"
    )
    artifacts = {
        "public/f.txt": {"type": "file", "path": "/out/f.txt"},
        "public/d": {"type": "directory", "path": "/out/d"},
        "public/missing.txt": {"type": "file", "path": "/out/not-there.txt"},
    }
    task_id, run = _run(submitter, worker, _payload(["sh", "-c", script], artifacts=artifacts))
    names = submitter.artifacts(task_id, 0)
    assert submitter.download(task_id, 0, "public/f.txt")[0] == b"one\n"
    assert submitter.download(task_id, 0, "public/d/a")[0] == b"two\n"
    assert submitter.download(task_id, 0, "public/d/sub/b")[0] == b"three\n"
    assert names["public/missing.txt"]["storageType"] == "error"
    # docker-worker semantics (spec §3.7, D2G optional artifacts): a missing artifact is reported as an
    # error artifact, it does not fail the task.
    assert run["state"] == "completed", submitter.log(task_id)


def test_cache_written_by_one_task_is_read_by_the_next(submitter: Submitter, worker: WorkerProcess) -> None:
    name = f"cache-{slugid.nice()[:8]}"
    scopes = [f"docker-worker:cache:{name}"]
    token = slugid.nice()
    first, run1 = _run(
        submitter,
        worker,
        _payload(["sh", "-c", f"echo {token} > /cache/t"], cache={name: "/cache"}),
        scopes=scopes,
    )
    assert run1["state"] == "completed", submitter.log(first)
    second, run2 = _run(
        submitter, worker, _payload(["cat", "/cache/t"], cache={name: "/cache"}), scopes=scopes
    )
    assert run2["state"] == "completed", submitter.log(second)
    assert token in submitter.log(second)


def test_cache_without_its_scope_is_malformed_payload(submitter: Submitter, worker: WorkerProcess) -> None:
    task_id, run = _run(submitter, worker, _payload(["true"], cache={"no-scope-cache": "/cache"}))
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "docker-worker:cache:no-scope-cache" in submitter.log(task_id)


def test_unavailable_feature_is_malformed_payload_naming_it(
    submitter: Submitter, worker: WorkerProcess
) -> None:
    task_id, run = _run(submitter, worker, _payload(["true"], features={"dind": True}))
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "features.dind" in submitter.log(task_id)


def _save_task(submitter: Submitter, worker: WorkerProcess, token: str, **kw: Any) -> str:
    payload = _payload(["sh", "-c", f"echo {token} > /from-task-a.txt"], features={"dockerSave": True})
    task_id, run = _run(submitter, worker, payload, **kw)
    assert run["state"] == "completed", submitter.log(task_id)
    data, _ = submitter.download(task_id, 0, "public/dockerImage.tar")
    with tarfile.open(fileobj=BytesIO(data)) as tf:
        assert "manifest.json" in tf.getnames(), "public/dockerImage.tar is not a docker save tarball"
    return task_id


def test_docker_save_then_task_image_runs_on_it(submitter: Submitter, worker: WorkerProcess) -> None:
    token = slugid.nice()
    task_a = _save_task(submitter, worker, token)
    image = {"type": "task-image", "taskId": task_a, "path": "public/dockerImage.tar"}
    task_b, run_b = _run(submitter, worker, _payload(["cat", "/from-task-a.txt"], image=image))
    assert run_b["state"] == "completed", submitter.log(task_b)
    assert token in submitter.log(task_b)
    # The same tarball again: loaded once, then reused by content hash.
    task_c, run_c = _run(submitter, worker, _payload(["cat", "/from-task-a.txt"], image=image))
    assert run_c["state"] == "completed", submitter.log(task_c)
    assert "was loaded before" in submitter.log(task_c)


def test_indexed_image_is_resolved_through_the_index(submitter: Submitter, worker: WorkerProcess) -> None:
    token = slugid.nice()
    namespace = f"tcworker.test.docker.{slugid.nice()[:10].lower().replace('-', 'x').replace('_', 'x')}"
    task_a = _save_task(
        submitter, worker, token, scopes=[f"index:insert-task:{namespace}"], routes=[f"index.{namespace}"]
    )
    assert task_a
    image = {"type": "indexed-image", "namespace": namespace, "path": "public/dockerImage.tar"}
    task_b, run_b = _run(submitter, worker, _payload(["cat", "/from-task-a.txt"], image=image))
    assert run_b["state"] == "completed", submitter.log(task_b)
    log = submitter.log(task_b)
    assert token in log and task_a in log


def test_generic_payload_runs_in_the_configured_image(submitter: Submitter, worker: WorkerProcess) -> None:
    payload = {"command": [["sh", "-c", "echo generic-in-docker; test -x /bin/busybox"]], "maxRunTime": 60}
    task_id, run = _run(submitter, worker, payload)
    assert run["state"] == "completed", submitter.log(task_id)
    assert "generic-in-docker" in submitter.log(task_id)


def test_no_container_or_volume_is_left_after_tasks(
    submitter: Submitter, worker: WorkerProcess, docker_client: docker.DockerClient
) -> None:
    # The image declares VOLUME /data, so Docker gives the container an anonymous volume; the task
    # prints its mounts so the test learns that volume's name.
    payload = _payload(["sh", "-c", "echo x > /data/x; cat /proc/self/mountinfo"], image=VOLUME_IMAGE)
    task_id, run = _run(submitter, worker, payload)
    assert run["state"] == "completed", submitter.log(task_id)
    volumes = set(re.findall(r"/volumes/([0-9a-f]{64})/_data", submitter.log(task_id)))
    assert volumes, "the task did not see an anonymous volume"
    left = {v.name for v in docker_client.volumes.list()} & volumes
    assert not left, f"anonymous volumes left behind: {left}"
    label = f"tcworker.worker={worker.config['workerGroup']}/{worker.worker_id}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


def test_purge_cache_request_empties_the_cache_for_later_tasks(
    submitter: Submitter, worker: WorkerProcess, shared_platform: Any
) -> None:
    name = f"purged-{slugid.nice()[:8]}"
    scopes = [f"docker-worker:cache:{name}"]
    cache = {name: "/cache"}
    first, run1 = _run(
        submitter, worker, _payload(["sh", "-c", "echo old > /cache/f"], cache=cache), scopes=scopes
    )
    assert run1["state"] == "completed", submitter.log(first)
    purge = shared_platform.client(taskcluster.PurgeCache)
    purge.purgeCache(f"{worker.config['provisionerId']}/{submitter.worker_type}", {"cacheName": name})
    second, run2 = _run(
        submitter, worker, _payload(["sh", "-c", "test ! -e /cache/f"], cache=cache), scopes=scopes
    )
    assert run2["state"] == "completed", "the cache survived a purge-cache request:\n" + submitter.log(second)


@pytest.fixture(scope="module")
def gpg_key() -> Iterator[GpgKey]:
    yield from make_gpg_key()


@pytest.fixture
def gpg_worker(
    tmp_path: Path, shared_platform: Any, gpg_key: GpgKey, test_image: str
) -> Iterator[tuple[WorkerProcess, Submitter]]:
    """A docker worker holding the OpenPGP secret key (``openpgpPrivateKeyLocation``), own queue."""
    sub = Submitter.for_platform(shared_platform)
    proc = start_worker_process(
        shared_platform,
        tmp_path,
        engine="docker",
        dockerImage=TEST_IMAGE,
        workerType=sub.worker_type,
        openpgpPrivateKeyLocation=str(gpg_key.secret_key_file),
    )
    try:
        yield proc, sub
    finally:
        proc.stop()
        print(f"\n===== gpg docker worker output (tail) =====\n{proc.tail(6000)}")


def _secret_doc(task_id: str, value: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "messageVersion": 1,
        "taskId": task_id,
        "startTime": now_ms - 60_000,
        "endTime": now_ms + 600_000,
        "name": "SECRET_TOKEN",
        "value": value,
    }


def test_encrypted_env_made_by_gpg_reaches_the_container_and_is_masked(
    gpg_worker: tuple[WorkerProcess, Submitter], gpg_key: GpgKey
) -> None:
    worker, sub = gpg_worker
    secret = "s3cr3t-" + slugid.nice()
    task_id = slugid.nice()
    command = [
        "sh",
        "-c",
        f'test "$SECRET_TOKEN" = "{secret}" && echo secret-matches; echo "leak:$SECRET_TOKEN"',
    ]
    payload = _payload(command, encryptedEnv=[gpg_key.message(_secret_doc(task_id, secret))])
    task = sub.task_definition(payload, retries=0)
    sub.queue.createTask(task_id, task)
    run = sub.wait_run(task_id, timeout=90, worker=worker)
    log = sub.log(task_id)
    assert run["state"] == "completed", log
    assert "secret-matches" in log
    assert "leak:[secret]" in log
    assert secret not in log


def test_encrypted_env_replayed_for_another_task_is_malformed_payload(
    gpg_worker: tuple[WorkerProcess, Submitter], gpg_key: GpgKey
) -> None:
    worker, sub = gpg_worker
    message = gpg_key.message(_secret_doc(slugid.nice(), "stolen-value"))  # made for some other task
    task_id, run = _run(sub, worker, _payload(["true"], encryptedEnv=[message]))
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "secret data violation" in sub.log(task_id)
