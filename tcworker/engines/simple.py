"""The simple engine: generic-worker's *insecure* engine (tasks run as the worker's own user).

Each run gets ``<tasksDir>/task_<taskIdPrefix>_<runId>``; commands run there as the worker user,
in their own session, and everything they start is killed when each command ends. The default
environment is the worker's own minus ``TASKCLUSTER_ACCESS_TOKEN`` (spec §2.2). Nothing is
isolated from the task (the seed document's warning: it can read the worker's config); the only
guarantees are that artifacts cannot name paths outside the task directory and that no process
outlives its command.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tcworker.engines import artifact_reader
from tcworker.engines.base import ArtifactFile, RunContext
from tcworker.engines.hostsandbox import (
    PRIVATE_DIR,
    HostEngine,
    HostSandbox,
    artifact_problem,
    make_task_dir,
)
from tcworker.errors import MalformedPayload
from tcworker.sparedirs import DirRecycler
from tcworker.taskdirs import create_tasks_dir, task_dir_name

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

HIDDEN_VARIABLES = ("TASKCLUSTER_ACCESS_TOKEN",)


def worker_groups() -> list[str]:
    """Names of the worker user's groups, except the one named like the user (generic-worker)."""
    user = pwd.getpwuid(os.getuid()).pw_name
    names: set[str] = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    names.discard(user)
    return sorted(names)


def go_list(items: Sequence[str]) -> str:
    """A list as Go's ``%v`` prints it (``[a b]``), for generic-worker's messages."""
    return "[" + " ".join(items) + "]"


class SimpleSandbox(HostSandbox):
    """One run on the simple engine."""

    def base_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in HIDDEN_VARIABLES}

    async def collect_artifact(
        self, path: str, kind: str, staging: Path, max_file_bytes: int | None = None
    ) -> list[ArtifactFile]:
        """The task's own files (no copy needed: the task runs as the worker user anyway)."""
        try:
            files = await asyncio.to_thread(artifact_reader.resolve, str(self.task_dir), path, kind)
        except artifact_reader.Problem as p:
            raise artifact_problem(p.reason, p.message) from None
        return [
            ArtifactFile(rel, Path(real), size, oversize=max_file_bytes is not None and size > max_file_bytes)
            for rel, real, size in files
        ]

    async def set_os_groups(self, groups: Sequence[str]) -> None:
        """osGroups on the insecure engine: only groups the worker user already has (spec §2.6)."""
        allowed = worker_groups()
        missing = [g for g in groups if g not in allowed]
        if missing:
            raise MalformedPayload(
                f"task definition contains unsupported osGroups: {go_list(missing)}\n"
                f"allowed values (on this worker pool): {go_list(allowed)}"
            )

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        await self._release_host(remove_task_dir=True)


TASK_DIR_MODE = 0o755


class SimpleEngine(HostEngine):
    """Runs generic-worker payloads as the worker's own user."""

    name = "simple"

    _task_dirs: DirRecycler | None = None

    async def initialise(self, config: WorkerConfig) -> None:
        self._config = config
        create_tasks_dir(config.tasks_dir)
        await self._detect_cgroups(config)
        if config.cleanUpTaskDirs:  # emptied task dirs kept for the next runs (tcworker.sparedirs)
            recycler = DirRecycler(config.tasks_dir / ".spare" / "tasks", keep=int(config.capacity) + 1)
            await asyncio.to_thread(recycler.reset)
            self._task_dirs = recycler
        self._park_launches(config)

    def supported_payload_kinds(self) -> frozenset[str]:
        return frozenset({"generic"})

    async def prepare(self, run: RunContext) -> SimpleSandbox:
        config = self._require_config()
        task_dir = config.tasks_dir / task_dir_name(run.task_id, run.run_id)
        recycler = self._task_dirs
        if recycler is None or not recycler.take(task_dir, TASK_DIR_MODE, PRIVATE_DIR):
            try:  # two mkdirs: cheaper inline than a thread hop, which waits for the GIL under load
                make_task_dir(task_dir, TASK_DIR_MODE, replace_leftover=False)
            except FileExistsError:  # a leftover to remove first: off the loop
                await asyncio.to_thread(make_task_dir, task_dir, TASK_DIR_MODE)
        try:
            cgroup, parked = await self._task_cgroup(task_dir.name)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, task_dir, True)
            raise
        return SimpleSandbox(
            task_dir,
            clean_up=bool(config.cleanUpTaskDirs),
            grace=self.kill_grace,
            cgroup=cgroup,
            parked=parked,
            park=self._stub_maker(),
            on_destroyed=self._top_up_launches,
            recycler=recycler,
            lane=self._release_lane,
        )
