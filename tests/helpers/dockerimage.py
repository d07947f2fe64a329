"""Helpers for the docker engine's tests: a busybox root file system image, engine configs, runs.

Images are built locally (no registry is reachable in CI): a root file system made of Debian's
``busybox-static`` (``/bin/busybox`` plus one relative symlink per applet) is tarred in memory and
``docker import``-ed. ``make_run`` builds a ``RunContext`` with the real ``TaskLog`` the worker uses.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
import slugid

from tcworker import tctime
from tcworker.config import WorkerConfig, from_mapping
from tcworker.engines.base import RunContext
from tcworker.worker.tasklog import TaskLog

TEST_IMAGE = "tcworker-test/busybox:latest"
BUSYBOX = "/bin/busybox"


def skip_or_fail(reason: str) -> None:
    """Missing infrastructure: skip locally, fail under CI=true (same rule as tests/conftest.py)."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def busybox_path() -> str | None:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def rootfs_tar(extra_files: Mapping[str, bytes] | None = None) -> bytes:
    """A minimal root file system: busybox applets in /bin, /etc/passwd, /tmp, /root, /home."""
    busybox = busybox_path()
    if busybox is None:
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, mode in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home", 0o755)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tf.addfile(info)
        for name in ("dev", "proc", "sys", "usr", "usr/bin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        tf.add(busybox, "bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tf.addfile(info)
        files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"}
        files.update(extra_files or {})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_image(
    client: docker.DockerClient,
    name: str,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    changes: list[str] | None = None,
) -> str:
    """``docker import`` a busybox root file system as ``name`` (``repo:tag``); returns the image id."""
    repo, _, tag = name.rpartition(":")
    client.api.import_image_from_data(
        rootfs_tar(extra_files),
        repository=repo,
        tag=tag,
        changes=["ENV PATH=/bin:/usr/bin", 'CMD ["/bin/sh"]', *(changes or [])],
    )
    return str(client.images.get(name).id)


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
