"""Docker-engine configs and run contexts for tests that drive the engine directly.

``engine_config`` keeps every directory under the test's own tmp dir and runs generic payloads in
the busybox ``TEST_IMAGE``; ``make_run`` builds a ``RunContext`` with the real ``TaskLog`` the worker
uses, so what a test reads back is what a task log would hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import slugid

from helpers.dockerimage import TEST_IMAGE
from tcworker import tctime
from tcworker.config import WorkerConfig, from_mapping
from tcworker.engines.base import RunContext
from tcworker.worker.tasklog import TaskLog


def engine_config(tmp_path: Path, **overrides: Any) -> WorkerConfig:
    """A docker-engine config whose directories all live under ``tmp_path``."""
    values: dict[str, Any] = {
        "engine": "docker",
        "rootURL": "http://127.0.0.1:1",
        "clientId": "test/docker-engine",
        "accessToken": "not-used",
        "workerId": f"w-{slugid.nice()[:8]}",
        "workerType": f"docker-{slugid.nice()[:8].lower()}",
        "provisionerId": "tcworker-test",
        "ed25519SigningKeyLocation": "unused",
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
    expand_scopes: Any = None,
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
        expand_scopes=expand_scopes,
    )


def log_text(run: RunContext) -> str:
    log = run.log
    assert isinstance(log, TaskLog)
    return log.path.read_text(errors="replace")


def containers_of(client: docker.DockerClient, task_id: str) -> list[Any]:
    return [
        c
        for c in client.containers.list(all=True)
        if c.labels.get("tcworker.run", "").startswith(f"{task_id}/")
    ]


def volume_names(client: docker.DockerClient) -> set[str]:
    return {v.name for v in client.volumes.list()}
