"""What the simple and multiuser sandboxes share: a task directory on the host and commands run
in it through a ``CommandRunner``.

The task directory is ``<tasksDir>/task_<taskIdPrefix>_<runId>`` (``task_dir_name``, spec
§1.5 item 7) with a worker-owned ``generic-worker/`` subdirectory (0700, spec §2.7). Subclasses
decide who the commands run as (``identity``), what the default environment is (``base_env``),
how artifacts are read and what ``destroy`` removes besides the directory.

Where the host offers cgroups (``tcworker.engines.cgroups``, detected once by ``HostEngine``),
each run also gets its own group, limited by ``taskMaxProcesses`` and ``taskMaxMemoryMegabytes``:
every command joins it before ``exec``, it is killed as a whole after each command, and
``destroy`` removes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines import artifact_reader, cgroups, spawnstub
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
from tcworker.engines.launchpool import LaunchPool
from tcworker.engines.process import PIPE_SIZE, CommandRunner, Identity
from tcworker.errors import InternalError
from tcworker.sparedirs import DirRecycler
from tcworker.taskdirs import remove_small_tree

log = logging.getLogger(__name__)

PROBLEMS: dict[str, type[ArtifactProblem]] = {
    artifact_reader.MISSING: ArtifactMissing,
    artifact_reader.NOT_READABLE: ArtifactNotReadable,
    artifact_reader.INVALID: ArtifactInvalid,
}


def artifact_problem(reason: str, message: str) -> ArtifactProblem:
    """The ``ArtifactProblem`` subclass for a queue error-artifact ``reason``."""
    return PROBLEMS.get(reason, ArtifactInvalid)(message)


PRIVATE_DIR = "generic-worker"  # the worker's own files in a task directory (mode 0700)


def make_task_dir(path: Path, mode: int = 0o755, *, replace_leftover: bool = True) -> None:
    """Create a fresh task directory (a leftover of a crashed run with the same name is removed)
    and its worker-private ``generic-worker/`` subdirectory. On every run's path: the usual case
    is two ``mkdir`` and two ``chmod`` (the modes whatever the umask), no ``stat`` first.
    ``replace_leftover=False`` raises ``FileExistsError`` for a leftover instead, having created
    nothing (a caller on the event loop then removes it off the loop: its size is unknown)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:  # a leftover: a directory, a file or a (dangling) symlink
        if not replace_leftover:
            raise
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
        os.mkdir(path, mode)
    os.chmod(path, mode)
    private = os.path.join(path, PRIVATE_DIR)
    os.mkdir(private, 0o700)
    os.chmod(private, 0o700)


class ReleaseLane:
    """Where a finished run's host clean-up runs (``HostSandbox._release_host``): one per engine.

    In a thread while other runs of the engine are alive: under load these system calls wait
    on kernel locks for milliseconds, and a py-spy of a worker draining trivial tasks at
    capacity 8 found them ~13 % of the event loop's time when they ran on it, every other run's
    HTTP calls waiting behind them (done on the loop they also cost capacity 8 6–10 % of its
    tasks/s, measured). When the run is the engine's only one, on the loop instead, once the
    loop's ready work has gone (the next ``claimWork``, whose request reaches its socket on
    the loop's third turn after the report): the loop then only waits for the claim's answer,
    and the thread trip cost more than the work — ~0.65 ms of CPU in the thread but ~4 ms of
    wall time, most of it waiting for the GIL, and every hand-off of the GIL a futex wake of
    the other thread (``pthread_cond_signal`` was ~4 % of the worker's main thread in ``perf``).
    """

    #: Loop turns given to ready work first: the next claim's request is written on the third.
    READY_TURNS = 4

    def __init__(self) -> None:
        self.alive = 0  # sandboxes made and not yet released

    def join(self) -> None:
        """A sandbox is made (its release will ``leave``)."""
        self.alive += 1

    def leave(self) -> bool:
        """A sandbox starts its release; ``True``: it was the only one alive (release on the loop)."""
        self.alive -= 1
        return self.alive == 0

    async def let_ready_work_go(self) -> None:
        for _ in range(self.READY_TURNS):
            await asyncio.sleep(0)


class HostSandbox(Sandbox):
    """Common part of a host sandbox: one task directory, commands run one at a time."""

    def __init__(
        self,
        task_dir: Path,
        *,
        clean_up: bool,
        grace: float,
        cgroup: cgroups.TaskCgroup | None = None,
        parked: spawnstub.StubLaunch | None = None,
        park: Callable[[Sequence[Path]], spawnstub.StubLaunch] | None = None,
        on_destroyed: Callable[[], None] | None = None,
        recycler: DirRecycler | None = None,
        lane: ReleaseLane | None = None,
    ) -> None:
        self._task_dir = task_dir
        self._lane = lane  # where the run's host clean-up will run (on the loop or in a thread)
        if lane is not None:
            lane.join()
        self._recycler = recycler  # keeps the emptied task dir for a later run (tcworker.sparedirs)
        self._clean_up = clean_up
        self._cgroup = cgroup
        self._runner = CommandRunner(
            grace=grace, sweep=self._sweeper(), cgroup=cgroup, parked=parked, park=park
        )
        self._on_destroyed = on_destroyed  # the engine tops its launch pool up (after the report)
        self._destroyed = False

    @property
    def cgroup(self) -> cgroups.TaskCgroup | None:
        """The run's cgroup (``None`` when the host offers none)."""
        return self._cgroup

    def memory_usage_is_cheap(self) -> bool:
        """With a memory-accounting cgroup the figure is one file read."""
        return self._cgroup is not None and self._cgroup.host.memory is not None

    def memory_usage_bytes(self) -> int | None:
        """The kernel's count for the run's cgroup (every process of the task, however started)."""
        if self._cgroup is not None:
            usage = self._cgroup.memory_usage_bytes()
            if usage is not None:
                return usage
        return super().memory_usage_bytes()

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

    def _sweeper(self) -> Callable[[], Awaitable[object]] | None:
        """Extra clean-up after every command (multiuser: kill every process of the task user);
        ``None``: nothing to do. It finishes in the background: see ``settle_processes``."""
        return None

    async def settle_processes(self) -> None:
        """Wait for the last command's clean-up (``_sweeper``) before starting another process
        as the commands' user, which it would kill."""
        await self._runner.settle()

    def base_env(self) -> dict[str, str]:
        raise NotImplementedError

    async def execute(self, argv: Sequence[str], env: Mapping[str, str], log: LogSink) -> ProcessResult:
        return await self._runner.run(
            argv, env, str(self._task_dir), log, identity=self.identity(), marker=self.marker(env)
        )

    def abort(self, reason: CancelReason) -> None:
        self._runner.abort(reason)

    async def _release_host(self, *, remove_task_dir: bool) -> None:
        """The run's kernel-side leftovers (idempotent). A parked stub no command used is ended
        first, on the loop; then the cgroup's ``rmdir`` (or the kill and wait when processes are
        left), the task directory when asked and when clean-up is on, and the launch pool's
        top-up (``mkdir`` of the next group, ``vfork`` of its stub): on the loop when this run is
        the engine's only one and its end is the usual one, else in one thread trip
        (``ReleaseLane`` says why). The run has reported by now: neither is on the task's path."""
        try:
            await self._runner.discard_parked()
        finally:
            on_destroyed, self._on_destroyed = self._on_destroyed, None
            lane, self._lane = self._lane, None
            released = False
            if lane is not None and lane.leave():
                await lane.let_ready_work_go()
                released = self._release_host_blocking(remove_task_dir, on_destroyed, at_once=True)
            if not released:
                await asyncio.to_thread(self._release_host_blocking, remove_task_dir, on_destroyed)

    def _release_host_blocking(
        self, remove_task_dir: bool, on_destroyed: Callable[[], None] | None, *, at_once: bool = False
    ) -> bool:
        """The release itself (blocking), then ``on_destroyed`` (the launch pool's top-up).
        ``at_once`` (on the loop): ``False`` as soon as something would take long (processes left
        in the cgroup, a big task directory), leaving that and the rest to the thread trip, which
        repeats what was done harmlessly (``remove_if_empty`` of a removed group is ``True``; the
        recycler's checks come before it empties anything)."""
        try:
            finished = self._release_leftovers(remove_task_dir, at_once)
        except BaseException:
            if on_destroyed is not None:
                on_destroyed()
            raise
        if finished and on_destroyed is not None:
            on_destroyed()
        return finished

    def _release_leftovers(self, remove_task_dir: bool, at_once: bool) -> bool:
        all_gone = False  # every process of the run provably ended: its cgroup was empty
        deferred = False
        try:
            if self._cgroup is not None:
                all_gone = self._cgroup.remove_if_empty()
                if not all_gone:
                    deferred = at_once
                    if not at_once:
                        self._cgroup.remove()
        finally:
            if not deferred and remove_task_dir and self._clean_up:
                deferred = not self._remove_task_dir_blocking(recycle=all_gone, at_once=at_once)
        return not deferred

    def _remove_task_dir_blocking(self, recycle: bool = False, at_once: bool = False) -> bool:
        """Remove the task dir, or keep it emptied for a later run when the run's processes are
        known to be gone (a process left behind must not reach the next run's directory).
        ``False``: left for ``shutil.rmtree`` (``at_once``: a tree too big to remove on the loop)."""
        if recycle and self._recycler is not None and self._recycler.keep(self._task_dir, PRIVATE_DIR):
            return True
        if remove_small_tree(self._task_dir) or not os.path.lexists(self._task_dir):
            return True
        if at_once:
            return False
        shutil.rmtree(self._task_dir, ignore_errors=True)
        if os.path.lexists(self._task_dir):
            log.warning("could not remove task directory %s completely", self._task_dir)
        return True


class HostEngine(Engine):
    """What the simple and multiuser engines share: the config kept at ``initialise`` and the
    kill grace their sandboxes use; neither has anything to release at ``shutdown``."""

    def __init__(self, kill_grace: float = 3.0) -> None:
        self.kill_grace = kill_grace
        self._config: WorkerConfig | None = None
        self._cgroups: cgroups.CgroupHost | None = None
        self._limits: cgroups.TaskLimits | None = None
        self._launches: LaunchPool | None = None
        self._release_lane = ReleaseLane()

    async def shutdown(self) -> None:
        if self._launches is not None:
            await self._launches.close()

    async def _detect_cgroups(self, config: WorkerConfig) -> None:
        """Find the host's cgroups once and say in the worker log which ones are used."""
        self._limits = cgroups.task_limits(config)
        self._cgroups = await asyncio.to_thread(cgroups.detect)
        if self._cgroups is None:
            log.warning(
                "per-task cgroups: none usable on this host (no writable cgroup v2 or v1 memory/pids/"
                "freezer hierarchy); taskMaxProcesses and taskMaxMemoryMegabytes are not enforced"
            )
            return
        log.info(
            "%s (taskMaxProcesses=%d, taskMaxMemoryMegabytes=%d)",
            self._cgroups.describe(),
            self._limits.max_processes,
            self._limits.max_memory_megabytes,
        )
        stale = await asyncio.to_thread(self._cgroups.remove_stale)
        if stale:
            log.warning("removed cgroups left by a worker that is gone: %s", ", ".join(stale))

    async def _task_cgroup(self, name: str) -> tuple[cgroups.TaskCgroup | None, spawnstub.StubLaunch | None]:
        """A fresh, limited cgroup for one run (``None`` without cgroups on this host), with the
        stub of its first command already waiting in it when the launch pool has one."""
        if self._cgroups is None or self._limits is None:
            return None, None
        ready = self._launches.take() if self._launches is not None else None
        if ready is not None:
            return ready
        try:  # inline: a few mkdir and limit writes cost less than a thread trip (see taskdirs)
            return self._cgroups.create(cgroups.group_name(name), self._limits), None
        except OSError as e:
            raise InternalError(f"cannot create the task's cgroup {name}: {e}") from e

    def _park_launches(self, config: WorkerConfig) -> None:
        """The last step of ``initialise`` (nothing to leak if an earlier one fails): the ready
        cgroups with a parked stub each, one more than the slots, so a run claimed right after
        another finds one whose stub has already joined."""
        if self._cgroups is not None and self._limits is not None and spawnstub.launch_available():
            self._launches = LaunchPool(self._cgroups, self._limits, config.capacity + 1, PIPE_SIZE)
            self._launches.top_up()

    def _stub_maker(self) -> Callable[[Sequence[Path]], spawnstub.StubLaunch] | None:
        """For a run's later commands: a stub on the spot, from the launch pool's forker."""
        return self._launches.park if self._launches is not None else None

    def _top_up_launches(self) -> None:
        """After a run: make the next run's cgroup and stub (off every task's path)."""
        if self._launches is not None:
            self._launches.top_up()

    def _require_config(self) -> WorkerConfig:
        if self._config is None:
            raise RuntimeError("engine used before initialise()")
        return self._config
