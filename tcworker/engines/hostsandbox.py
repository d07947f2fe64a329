"""What the simple and multiuser sandboxes share: a task directory on the host and commands run
in it through a ``CommandRunner``.

The task directory is ``<tasksDir>/task_<taskIdPrefix>_<runId>`` (``task_dir_name``, spec
§1.5 item 7) with a worker-owned ``generic-worker/`` subdirectory (0700, spec §2.7). Subclasses
decide who the commands run as (``identity``), what the default environment is (``base_env``),
how artifacts are read and what ``destroy`` removes besides the directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines import artifact_reader
from tcworker.engines.base import (
    ArtifactInvalid,
    ArtifactMissing,
    ArtifactNotReadable,
    ArtifactProblem,
    CancelReason,
    Engine,
    LogSink,
    ProcessResult,
    Sandbox,
)
from tcworker.engines.process import CommandRunner, Identity

log = logging.getLogger(__name__)

PROBLEMS: dict[str, type[ArtifactProblem]] = {
    artifact_reader.MISSING: ArtifactMissing,
    artifact_reader.NOT_READABLE: ArtifactNotReadable,
    artifact_reader.INVALID: ArtifactInvalid,
}


def artifact_problem(reason: str, message: str) -> ArtifactProblem:
    """The ``ArtifactProblem`` subclass for a queue error-artifact ``reason``."""
    return PROBLEMS.get(reason, ArtifactInvalid)(message)


def make_task_dir(path: Path, mode: int = 0o755) -> None:
    """Create a fresh task directory (a leftover of a crashed run with the same name is removed)
    and its worker-private ``generic-worker/`` subdirectory."""
    if path.is_symlink() or path.exists():
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    path.mkdir(mode=mode)
    os.chmod(path, mode)
    private = path / "generic-worker"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)


class HostSandbox(Sandbox):
    """Common part of a host sandbox: one task directory, commands run one at a time."""

    def __init__(self, task_dir: Path, *, clean_up: bool, grace: float) -> None:
        self._task_dir = task_dir
        self._clean_up = clean_up
        self._runner = CommandRunner(grace=grace, sweep=self._sweep)
        self._destroyed = False

    @property
    def task_dir(self) -> Path:
        return self._task_dir

    @property
    def workdir_in_task(self) -> str:
        return str(self._task_dir)

    @property
    def cancel_reason(self) -> CancelReason | None:
        return self._runner.cancel_reason

    def identity(self) -> Identity | None:
        """Who commands run as; ``None`` = the worker's own user."""
        return None

    def shell_identity(self) -> tuple[Path, int, int, tuple[int, ...]] | None:
        """The shell runs in the task directory as the commands' user (task user on multiuser)."""
        who = self.identity()
        return None if who is None else (self.task_dir, who.uid, who.gid, who.groups)

    def marker(self, env: Mapping[str, str]) -> bytes | None:
        """An environment entry identifying this run's processes (see ``proctree``)."""
        workdir = env.get("TASK_WORKDIR")
        return f"TASK_WORKDIR={workdir}".encode() if workdir else None

    def task_process_ids(self) -> list[int] | None:
        """The running command's process tree (``memory_usage_bytes`` sums their RSS)."""
        return self._runner.running_pids()

    async def _sweep(self) -> None:
        """Extra clean-up after every command (multiuser: every process of the task user)."""

    def base_env(self) -> dict[str, str]:
        raise NotImplementedError

    async def execute(self, argv: Sequence[str], env: Mapping[str, str], log: LogSink) -> ProcessResult:
        return await self._runner.run(
            argv, env, str(self._task_dir), log, identity=self.identity(), marker=self.marker(env)
        )

    def abort(self, reason: CancelReason) -> None:
        self._runner.abort(reason)

    async def _remove_task_dir(self) -> None:
        if self._clean_up and self._task_dir.exists():
            await asyncio.to_thread(shutil.rmtree, self._task_dir, ignore_errors=True)
            if self._task_dir.exists():
                log.warning("could not remove task directory %s completely", self._task_dir)


class HostEngine(Engine):
    """What the simple and multiuser engines share: the config kept at ``initialise`` and the
    kill grace their sandboxes use; neither has anything to release at ``shutdown``."""

    def __init__(self, kill_grace: float = 3.0) -> None:
        self.kill_grace = kill_grace
        self._config: WorkerConfig | None = None

    async def shutdown(self) -> None:
        return None

    def _require_config(self) -> WorkerConfig:
        if self._config is None:
            raise RuntimeError("engine used before initialise()")
        return self._config
