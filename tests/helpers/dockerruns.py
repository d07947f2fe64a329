"""Docker-engine configs and run contexts for tests that drive the engine directly.

``engine_config`` keeps every directory under the test's own tmp dir and runs generic payloads in
the busybox ``TEST_IMAGE``; ``make_run`` builds a ``RunContext`` with the real ``TaskLog`` the worker
uses, so what a test reads back is what a task log would hold. ``InProcessRun`` takes one task
through the worker's real ``TaskRun`` and feature list in the test's own event loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import slugid

from helpers.dockerimage import TEST_IMAGE
from helpers.engines import write_signing_key
from tcworker import tctime
from tcworker.config import WorkerConfig, from_mapping
from tcworker.engines.base import RunContext
from tcworker.worker.tasklog import TaskLog


def signing_key(directory: Path) -> Path:
    """A real ed25519 seed file (the chain-of-trust feature reads the key when a worker starts)."""
    path = directory / "ed25519.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_signing_key(path)
    return path


def engine_config(tmp_path: Path, **overrides: Any) -> WorkerConfig:
    """A docker-engine config whose directories all live under ``tmp_path``."""
    values: dict[str, Any] = {
        "engine": "docker",
        "rootURL": "http://127.0.0.1:1",
        "clientId": "test/docker-engine",
        "accessToken": "not-used",
        "workerId": f"w-{slugid.nice()[:8]}",
        "workerType": f"docker-{uuid.uuid4().hex[:8]}",
        "provisionerId": "tcworker-test",
        "ed25519SigningKeyLocation": str(signing_key(tmp_path)),
        "tasksDir": str(tmp_path / "tasks"),
        "cachesDir": str(tmp_path / "caches"),
        "downloadsDir": str(tmp_path / "downloads"),
        "dockerImage": TEST_IMAGE,
    }
    values.update(overrides)
    return from_mapping(values)


def make_task(payload: Mapping[str, Any], scopes: list[str] | None = None) -> dict[str, Any]:
    now = tctime.now()
    return {
        "provisionerId": "tcworker-test",
        "workerType": "docker",
        "taskQueueId": "tcworker-test/docker",
        "schedulerId": "-",
        "taskGroupId": slugid.nice(),
        "dependencies": [],
        "requires": "all-completed",
        "routes": [],
        "priority": "lowest",
        "retries": 0,
        "created": tctime.to_json(now),
        "deadline": tctime.to_json(tctime.from_now(3600)),
        "expires": tctime.to_json(tctime.from_now(86400)),
        "scopes": list(scopes or []),
        "payload": dict(payload),
        "metadata": {
            "name": "t",
            "description": "t",
            "owner": "t@example.com",
            "source": "https://example.com",
        },
        "tags": {},
        "extra": {},
    }


def make_run(
    tmp_path: Path,
    payload: Mapping[str, Any],
    *,
    scopes: list[str] | None = None,
    kind: str | None = None,
    task_id: str | None = None,
    queue: Any = None,
    root_url: str = "",
) -> RunContext:
    """A ``RunContext`` for ``payload`` with a real ``TaskLog`` at ``tmp_path/<taskId>.log``."""
    task_id = task_id or slugid.nice()
    task = make_task(payload, scopes)
    return RunContext(
        task_id=task_id,
        run_id=0,
        task=task,
        payload=task["payload"],
        payload_kind=kind or ("docker" if "image" in payload else "generic"),
        log=TaskLog(tmp_path / f"{task_id}.log"),
        queue=queue,
        root_url=root_url,
    )


def log_text(run: RunContext) -> str:
    log = run.log
    assert isinstance(log, TaskLog)
    return log.path.read_text(errors="replace")


def containers_of(client: docker.DockerClient, task_id: str) -> list[Any]:
    """The containers of any run of ``task_id`` (Container objects). Listed through the low-level
    API: the high-level list inspects every container on the host, and one that some worker
    removes meanwhile would raise NotFound; only this task's are inspected, and one of them
    that is gone by then is left out."""
    found = []
    for row in client.api.containers(all=True):
        if (row.get("Labels") or {}).get("tcworker.run", "").startswith(f"{task_id}/"):
            try:
                found.append(client.containers.get(row["Id"]))
            except docker.errors.NotFound:
                continue
    return found


def volume_names(client: docker.DockerClient) -> set[str]:
    return {v.name for v in client.volumes.list()}


def leftovers_of_worker(
    client: docker.DockerClient, label: str, volumes: Collection[str] = (), timeout: float = 30.0
) -> tuple[list[Any], set[str]]:
    """Containers (API listing dicts) labelled ``tcworker.worker=<label>`` and which of ``volumes``
    still exist, once both are gone or after ``timeout`` seconds. The worker removes a run's containers after its
    report (off the resolution's critical path), so right after the resolution they may still be
    going; a leak is what is still there much later."""
    return leftovers_labelled(client, f"tcworker.worker={label}", volumes, timeout)


def leftovers_labelled(
    client: docker.DockerClient, label: str, volumes: Collection[str] = (), timeout: float = 30.0
) -> tuple[list[Any], set[str]]:
    """``leftovers_of_worker`` for any ``key=value`` label, e.g. ``tcworker.run=<taskId>/0``."""
    deadline = time.monotonic() + timeout
    while True:
        # The low-level list: the high-level one inspects each container, and one removed between
        # the listing and its inspect would raise NotFound.
        containers = client.api.containers(all=True, filters={"label": label})
        left = volume_names(client) & set(volumes)
        if (not containers and not left) or time.monotonic() > deadline:
            return containers, left
        time.sleep(0.2)


class InProcessRun:
    """One task through the worker's real ``TaskRun`` — admission, the feature list, the engine,
    uploads and the report — in the test's event loop, against a real platform process.

    Unlike a ``tcworker run`` subprocess it lets a test look at the engine and the features
    afterwards (caches, images) and set worker config per test. ``run`` creates the task with the
    platform's root client, claims it with the worker's credentials and returns the resolution
    and the task log as the worker wrote it.
    """

    def __init__(self, platform: Any, tmp_path: Path, **config_overrides: Any) -> None:
        self.platform = platform
        self.config = engine_config(
            tmp_path,
            rootURL=platform.root_url,
            clientId=platform.root_credentials["clientId"],
            accessToken=platform.root_credentials["accessToken"],
            **config_overrides,
        )
        self.tmp_path = tmp_path
        self.engine: Any = None
        self.features: list[Any] = []
        self.clients: Any = None

    async def __aenter__(self) -> InProcessRun:
        from tcworker.engines.docker.engine import DockerEngine
        from tcworker.features import load_features
        from tcworker.tcapi.clients import Clients

        self.clients = Clients(self.config.rootURL, self.config.credentials)
        self.engine = DockerEngine()
        await self.engine.initialise(self.config)
        self.features = load_features()
        for feature in self.features:
            await feature.initialise(self.config, self.clients)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for feature in self.features:
            await feature.shutdown()
        await self.engine.shutdown()
        await self.clients.close()

    def feature(self, name: str) -> Any:
        return next(f for f in self.features if f.name == name)

    async def run(
        self, payload: Mapping[str, Any], scopes: list[str] | None = None
    ) -> tuple[tuple[str, str | None], str, str]:
        """(resolution, task log text, taskId) of one task with ``payload`` and ``scopes``."""
        from tcworker.worker.taskrun import TaskRun

        task_id = slugid.nice()
        task = make_task(payload, scopes)
        task.update(
            provisionerId=self.config.provisionerId,
            workerType=self.config.workerType,
            taskQueueId=self.config.task_queue_id,
        )
        queue = self.clients.queue()
        await queue.createTask(task_id, task)
        answer = await queue.claimWork(
            self.config.task_queue_id,
            {"workerGroup": self.config.workerGroup, "workerId": self.config.workerId, "tasks": 1},
        )
        (claim,) = answer["tasks"]
        chunks: list[bytes] = []
        run = TaskRun(
            config=self.config,
            engine=self.engine,
            features=self.features,
            clients=self.clients,
            claim=claim,
            scratch_root=self.tmp_path / "runs",
            log_listeners=[chunks.append],
        )
        resolution = await run.run()
        return resolution, b"".join(chunks).decode("utf-8", "replace"), task_id
