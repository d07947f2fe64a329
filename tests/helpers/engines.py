"""Helpers for driving engines directly: a real config, a task log that keeps what it is given,
and process checks (psutil) that prove nothing of a command survived.

Shared by ``tests/engines`` (the contract suite) and ``tests/multiuser`` (isolation).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import slugid

from helpers.logs import RecordingLog
from tcworker.config import WorkerConfig, from_mapping
from tcworker.engines.base import RunContext

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# Seconds between SIGTERM and SIGKILL for the contract suite's engines: long enough that "killed
# at once" (max run time) and "killed after the grace" stay apart on a slow moment of a 2-core machine.
KILL_GRACE = 2.0


@contextmanager
def host_dirs() -> Iterator[Path]:
    """A scratch root whose ancestors task users can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="tcw-engines-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_signing_key(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(base64.b64encode(secrets.token_bytes(32)))
    os.chmod(path, mode)
    return path


def make_config(root: Path, engine: str, **overrides: Any) -> WorkerConfig:
    """A real ``WorkerConfig`` for ``engine`` with its own tasksDir and signing key under ``root``."""
    private = root / "worker"
    private.mkdir(mode=0o700, exist_ok=True)
    key = private / "ed25519.key"
    if not key.exists():
        write_signing_key(key)
    values: dict[str, Any] = {
        "engine": engine,
        "rootURL": "http://127.0.0.1:1",
        "clientId": "engine-tests",
        "accessToken": "not-a-real-token",
        "workerType": "engine-tests",
        # One id per test process: the docker engine removes its worker id's containers at start as
        # a crashed predecessor's leftovers, which would hit a concurrent test run's containers.
        "workerId": f"engine-tests-{os.getpid()}",
        "provisionerId": "tcw-tests",
        "tasksDir": str(root / "tasks"),
        "ed25519SigningKeyLocation": str(key),
        "cleanUpTaskDirs": True,
    }
    values.update(overrides)
    return from_mapping(values)


def run_context(log: RecordingLog | None = None, task_id: str | None = None, run_id: int = 0) -> RunContext:
    task_id = task_id or slugid.nice()
    return RunContext(
        task_id=task_id,
        run_id=run_id,
        task={"taskGroupId": task_id, "scopes": []},
        payload={"command": [["true"]], "maxRunTime": 60},
        payload_kind="generic",
        log=log or RecordingLog(),
    )


def command_env(sandbox: Any, task_id: str = "TASKID", **extra: str) -> dict[str, str]:
    """The env TaskRun would build: base env ← extra ← reserved variables."""
    env = dict(sandbox.base_env())
    env.update(extra)
    env.update({"TASK_ID": task_id, "RUN_ID": "0", "TASK_WORKDIR": sandbox.workdir_in_task})
    return env


def processes_with(token: str) -> list[psutil.Process]:
    """Living (non-zombie) processes whose command line contains ``token``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if token in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def processes_of_uid(uid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and uid in tuple(proc.info["uids"]):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def unique_sleep() -> str:
    """A ``sleep`` duration nobody else uses, to find exactly our processes afterwards."""
    return f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6):06d}"
