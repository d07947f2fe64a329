"""Per-task cgroups on the host: every process of a task inside one group, limited and killable.

Why: a process tree can be escaped (double ``fork``, ``setsid``, a cleared environment), but a
cgroup cannot be left by an unprivileged process, and the kernel enforces its limits. ``detect``
looks at what the host offers once, at worker start, and prefers cgroup v2: a v2 group gives
membership, ``cgroup.kill`` (the kernel kills every member in one pass, so a fork loop cannot
outrun it) and, when the ``memory``/``pids`` controllers can be enabled there, the limits. What v2
cannot do is taken from v1 (``memory``, ``pids``, ``freezer`` hierarchies: a hybrid host such as a
systemd "hybrid" layout has the v2 tree at ``unified/`` without controllers); with neither, tasks
run without a cgroup and the process-tree kill (``proctree``) is all there is.

A task's group is ``<hierarchy>/<the worker's own group>/tcworker/<name>`` in each hierarchy used
(nested below the worker's own group, so whatever limits the worker itself runs under still apply
to its tasks). A command joins it before ``exec``: the worker opens each ``cgroup.procs`` (as
root, with ``O_CLOEXEC``) and the child writes ``0`` ("me") to each descriptor after fork, so the
task's first instruction already runs inside. The kernel checks the credentials the file was
opened with, so this works after the child switched to the task user. Killing: ``cgroup.kill``
(v2), else freeze (v1 freezer), SIGKILL every member, thaw. Limits hit are read from the kernel's
event counters: ``pids.events`` ``max`` and ``memory.events`` ``oom_kill`` (v2) or
``memory.oom_control`` ``oom_kill`` (v1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "tcworker"
V1_CONTROLLERS = ("memory", "pids", "freezer")
KILL_WAIT = 5.0  # how long ``kill`` waits for the group to be empty
AUTO_MEMORY_SHARE = 0.8  # taskMaxMemoryMegabytes 0: this share of the host's physical memory


@dataclass(frozen=True)
class TaskLimits:
    """``taskMaxProcesses`` and ``taskMaxMemoryMegabytes`` as the kernel wants them."""

    max_processes: int
    max_memory_bytes: int

    @property
    def max_memory_megabytes(self) -> int:
        return self.max_memory_bytes // (1024 * 1024)


def host_memory_bytes() -> int:
    """The host's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def task_limits(config: WorkerConfig) -> TaskLimits:
    """The per-task limits of this worker (``taskMaxMemoryMegabytes`` 0 = 80 % of the host's memory)."""
    megabytes = int(config.taskMaxMemoryMegabytes)
    memory = megabytes * 1024 * 1024 if megabytes > 0 else int(host_memory_bytes() * AUTO_MEMORY_SHARE)
    return TaskLimits(max_processes=int(config.taskMaxProcesses), max_memory_bytes=memory)


@dataclass(frozen=True)
class LimitHit:
    """One limit the kernel enforced on a task's group since the last check."""

    key: str  # the config key: taskMaxProcesses / taskMaxMemoryMegabytes
    message: str


@dataclass(frozen=True)
class CgroupHost:
    """What the host offers and which hierarchy does which job (``None`` = nothing does it).

    ``v2`` is the parent directory for task groups in the v2 tree; ``v1`` maps a v1 controller
    to the parent directory in its hierarchy. ``memory``/``pids`` say which version enforces
    that limit; ``kill`` is ``"cgroup.kill"``, ``"freezer"`` or ``"signal"`` (SIGKILL the
    members one by one, repeated until none is left).
    """

    v2: Path | None
    v1: dict[str, Path] = field(default_factory=dict)
    memory: str | None = None  # "v2" | "v1" | None
    pids: str | None = None
    kill: str = "signal"

    def describe(self) -> str:
        """One line for the worker log: what is used for what."""
        parts = []
        if self.v2 is not None:
            parts.append(f"cgroup v2 at {self.v2}" + (" (cgroup.kill)" if self.kill == "cgroup.kill" else ""))
        if self.v1:
            parts.append("cgroup v1 " + ", ".join(f"{c} at {p}" for c, p in sorted(self.v1.items())))
        how = {
            "cgroup.kill": "cgroup.kill",
            "freezer": "freeze + SIGKILL (v1 freezer)",
            "signal": "SIGKILL of every member",
        }[self.kill]
        return (
            "per-task cgroups: "
            + " + ".join(parts)
            + f"; taskMaxMemoryMegabytes via {_via(self.memory, 'memory.max', 'memory.limit_in_bytes')}"
            + f"; taskMaxProcesses via {_via(self.pids, 'pids.max', 'pids.max')}"
            + f"; kill via {how}"
        )

    def parents(self) -> list[Path]:
        """The worker's parent group in every hierarchy used."""
        return [p for p in [self.v2, *self.v1.values()] if p is not None]

    def remove_stale(self) -> list[str]:
        """Kill and remove the groups of workers that are gone (a crash leaves its tasks' groups,
        maybe with processes in them); groups of live workers on the same host are left alone."""
        removed: list[str] = []
        names = {child.name for parent in self.parents() for child in _subdirs(parent)}
        for name in sorted(names):
            owner = worker_pid_of(name)
            if owner is None or owner == os.getpid() or os.path.exists(f"/proc/{owner}"):
                continue
            dirs = [parent / name for parent in self.parents() if (parent / name).is_dir()]
            TaskCgroup(self, name, TaskLimits(0, 0), dirs).remove()
            removed.append(name)
        return removed

    def create(self, name: str, limits: TaskLimits) -> TaskCgroup:
        """Make the task's groups and set its limits; raises ``OSError`` when the kernel refuses."""
        dirs: list[Path] = []
        group = TaskCgroup(self, name, limits, dirs)
        try:
            if self.v2 is not None:
                dirs.append(_fresh(self.v2 / name))
            for controller in sorted(self.v1):
                if _v1_needed(self, controller):
                    dirs.append(_fresh(self.v1[controller] / name))
            group.apply_limits()
        except OSError:
            group.remove()
            raise
        return group


def group_name(run_name: str) -> str:
    """A run's group name: its task directory name and the worker's pid (``remove_stale``)."""
    return f"{run_name}-w{os.getpid()}"


def worker_pid_of(name: str) -> int | None:
    """The worker pid in a group name made by ``group_name`` (``None``: not one of ours)."""
    _, sep, pid = name.rpartition("-w")
    return int(pid) if sep and pid.isdigit() else None


def _subdirs(path: Path) -> list[Path]:
    try:
        return [child for child in path.iterdir() if child.is_dir()]
    except OSError:
        return []


def _via(version: str | None, v2_file: str, v1_file: str) -> str:
    if version == "v2":
        return f"cgroup v2 {v2_file}"
    if version == "v1":
        return f"cgroup v1 {v1_file}"
    return "nothing (not enforced)"


def _v1_needed(host: CgroupHost, controller: str) -> bool:
    if controller == "memory":
        return host.memory == "v1"
    if controller == "pids":
        return host.pids == "v1"
    return controller == "freezer" and host.kill == "freezer"


def _fresh(path: Path) -> Path:
    """A new empty group at ``path`` (a leftover of a crashed run with the same name is removed;
    tried only when the name is taken, which fresh random names almost never are)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        os.rmdir(path)
        os.mkdir(path)
    return path


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as `echo >`: kernfs ignores the truncation
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_small(path: Path) -> bytes:
    """A small kernel file, whole: three system calls where ``Path.read_text`` makes eight and
    builds a buffered text reader (read after every command, on the event loop)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_keyed(path: Path) -> dict[str, int]:
    """A ``key value`` file (``memory.events``, ``pids.events``, ``memory.oom_control``)."""
    values: dict[str, int] = {}
    try:
        text = _read_small(path)
    except OSError:
        return values
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip(b"-").isdigit():
            values[parts[0].decode("ascii", "replace")] = int(parts[1])
    return values


def _pids_in(directory: Path) -> list[int]:
    try:
        return [int(x) for x in _read_small(directory / "cgroup.procs").split()]
    except (OSError, ValueError):
        return []


class TaskCgroup:
    """One task's group in every hierarchy the host uses; see the module docstring."""

    def __init__(self, host: CgroupHost, name: str, limits: TaskLimits, dirs: list[Path]) -> None:
        self.host = host
        self.name = name
        self.limits = limits
        self.dirs = dirs
        self._seen: dict[str, int] = {}
        self._counter_paths = self._counter_files()

    def _dir(self, version: str | None, controller: str) -> Path | None:
        if version == "v2" and self.host.v2 is not None:
            return self.host.v2 / self.name
        if version == "v1" and controller in self.host.v1:
            return self.host.v1[controller] / self.name
        return None

    def apply_limits(self) -> None:
        memory = self._dir(self.host.memory, "memory")
        if memory is not None:
            value = str(self.limits.max_memory_bytes)
            if self.host.memory == "v2":
                _write(memory / "memory.max", value)
                with contextlib.suppress(FileNotFoundError):  # absent without swap accounting
                    _write(memory / "memory.swap.max", "0")  # no swap escape
            else:
                _write(memory / "memory.limit_in_bytes", value)
                with contextlib.suppress(FileNotFoundError):  # absent without swap accounting
                    _write(memory / "memory.memsw.limit_in_bytes", value)  # memory+swap = memory: no swap
        pids = self._dir(self.host.pids, "pids")
        if pids is not None:
            _write(pids / "pids.max", str(self.limits.max_processes))

    # -- joining ------------------------------------------------------------------------------

    def joiner(self) -> tuple[list[int], Callable[[], None]]:
        """Descriptors of every ``cgroup.procs`` and the function a child runs before ``exec``.

        The caller closes the descriptors once the child has started (they are ``O_CLOEXEC``, so
        the task never inherits them). The child function only calls ``os.write``: it runs
        between fork and exec, where nothing else is safe.
        """
        fds: list[int] = []
        try:
            for directory in self.dirs:
                fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        joined = tuple(fds)

        def join() -> None:
            for fd in joined:
                os.write(fd, b"0")

        return fds, join

    # -- facts ----------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the group (from the first hierarchy; all hold the same members)."""
        return _pids_in(self.dirs[0]) if self.dirs else []

    def memory_usage_bytes(self) -> int | None:
        """``memory.current`` (v2) / ``memory.usage_in_bytes`` (v1); ``None`` when not accounted."""
        memory = self._dir(self.host.memory, "memory")
        if memory is None:
            return None
        name = "memory.current" if self.host.memory == "v2" else "memory.usage_in_bytes"
        try:
            return int(_read_small(memory / name))  # sampled on the event loop (resource monitor)
        except (OSError, ValueError):
            return None

    def counters(self) -> dict[str, int]:
        """The kernel's counts of enforced limits: ``pids`` (forks refused), ``oom_kill``."""
        return {name: _read_keyed(path).get(key, 0) for name, path, key in self._counter_paths}

    def _counter_files(self) -> list[tuple[str, Path, str]]:
        """``(counter, file, key in it)`` for ``counters``: worked out when the group is made
        (off a task's path for a ready group), read after every command on the event loop."""
        files = []
        pids = self._dir(self.host.pids, "pids")
        if pids is not None:
            files.append(("pids", pids / "pids.events", "max"))
        memory = self._dir(self.host.memory, "memory")
        if memory is not None:
            name = "memory.events" if self.host.memory == "v2" else "memory.oom_control"
            files.append(("oom_kill", memory / name, "oom_kill"))
        return files

    def new_limit_hits(self) -> list[LimitHit]:
        """Limits hit since the previous call (each event is reported once)."""
        hits: list[LimitHit] = []
        counts = self.counters()
        pids_file = "pids.max"
        forks = counts.get("pids", 0) - self._seen.get("pids", 0)
        if forks > 0:
            hits.append(
                LimitHit(
                    "taskMaxProcesses",
                    f"task hit taskMaxProcesses={self.limits.max_processes} ({pids_file}): "
                    f"{forks} fork{'s' if forks != 1 else ''} refused",
                )
            )
        kills = counts.get("oom_kill", 0) - self._seen.get("oom_kill", 0)
        if kills > 0:
            hits.append(
                LimitHit(
                    "taskMaxMemoryMegabytes",
                    f"task was OOM-killed: taskMaxMemoryMegabytes={self.limits.max_memory_megabytes} "
                    f"({'memory.max' if self.host.memory == 'v2' else 'memory.limit_in_bytes'}): "
                    f"{kills} process{'es' if kills != 1 else ''} killed",
                )
            )
        self._seen = counts
        return hits

    # -- killing and removal --------------------------------------------------------------------

    def kill(self, timeout: float = KILL_WAIT) -> int:
        """SIGKILL every member (blocking; callers use a thread); return how many are left."""
        if not self.dirs:
            return 0
        deadline = time.monotonic() + timeout
        while True:
            members = self.pids()
            if not members:
                return 0
            if self.host.kill == "cgroup.kill" and self.host.v2 is not None:
                with contextlib.suppress(OSError):
                    _write(self.host.v2 / self.name / "cgroup.kill", "1")
            elif self.host.kill == "freezer":
                self._freeze_and_kill()
            else:
                _signal_all(members)
            if time.monotonic() > deadline:
                left = len(self.pids())
                if left:
                    log.warning("%d process(es) of cgroup %s survived SIGKILL", left, self.name)
                return left
            time.sleep(0.01)

    def _freeze_and_kill(self) -> None:
        freezer = self.host.v1["freezer"] / self.name
        try:
            _write(freezer / "freezer.state", "FROZEN")
            for _ in range(100):  # frozen members cannot fork while they are being killed
                if (freezer / "freezer.state").read_text().strip() == "FROZEN":
                    break
                time.sleep(0.005)
            _signal_all(_pids_in(freezer))
        finally:
            with contextlib.suppress(OSError):
                _write(freezer / "freezer.state", "THAWED")  # SIGKILL is delivered on thaw

    def remove_if_empty(self) -> bool:
        """Remove the group when no process is left in it, without waiting (non-blocking: one
        read of each ``cgroup.procs`` and one ``rmdir`` per hierarchy); ``False``: processes are
        left or the kernel refused an ``rmdir`` — call ``remove`` (in a thread) then."""
        if self.pids():
            return False
        for directory in reversed(self.dirs):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return False
        self.dirs = []
        return True

    def remove(self) -> None:
        """Kill what is left and remove the group from every hierarchy (idempotent)."""
        self.kill()
        for directory in reversed(self.dirs):
            for _ in range(100):  # rmdir is refused until the last member has been reaped
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                log.warning("could not remove cgroup %s", directory)
        self.dirs = []


def _signal_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# -- detection ------------------------------------------------------------------------------------


def own_groups(text: str) -> tuple[str | None, dict[str, str]]:
    """The worker's own group in the v2 tree and per v1 controller, from ``/proc/self/cgroup``."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return v2, v1


def _below(mount: Path, own: str) -> Path:
    return mount / own.lstrip("/") if own and own != "/" else mount


def _make_parent(path: Path) -> bool:
    try:
        path.mkdir(exist_ok=True)
        return os.access(path / "cgroup.procs", os.W_OK) or not (path / "cgroup.procs").exists()
    except OSError as e:
        log.info("cannot use cgroup %s: %s", path, e.strerror)
        return False


def _enable_v2_controllers(own_dir: Path, parent: Path, wanted: set[str]) -> set[str]:
    """Enable ``wanted`` controllers for the task groups below ``parent``; return those enabled."""
    enabled: set[str] = set()
    for controller in sorted(wanted):
        try:
            available = set((own_dir / "cgroup.controllers").read_text().split())
            if controller not in available:
                continue
            for directory in (own_dir, parent):
                current = set((directory / "cgroup.subtree_control").read_text().split())
                if controller not in current:
                    _write(directory / "cgroup.subtree_control", f"+{controller}")
            enabled.add(controller)
        except OSError as e:
            log.info("cgroup v2 controller %s cannot be enabled below %s: %s", controller, own_dir, e.strerror)
    return enabled


def detect(root: Path = CGROUP_ROOT, self_cgroup: str | None = None) -> CgroupHost | None:
    """What this host offers for per-task groups (``None``: nothing usable, run without).

    ``root`` is the cgroup mount point and ``self_cgroup`` the text of ``/proc/self/cgroup``
    (both parameters so that a test can hand in a fake tree). Creates the worker's parent group
    ``tcworker`` in each hierarchy it will use.
    """
    if self_cgroup is None:
        try:
            self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            self_cgroup = ""
    own_v2, own_v1 = own_groups(self_cgroup)
    v2_mount: Path | None = None
    if (root / "cgroup.controllers").exists():
        v2_mount = root  # pure v2
    elif (root / "unified" / "cgroup.controllers").exists():
        v2_mount = root / "unified"  # hybrid: v2 tree without (most) controllers
    v2_parent: Path | None = None
    v2_controllers: set[str] = set()
    if v2_mount is not None:
        own_dir = _below(v2_mount, own_v2 or "/")
        candidate = own_dir / PARENT_NAME
        if _make_parent(candidate):
            v2_parent = candidate
            v2_controllers = _enable_v2_controllers(own_dir, candidate, {"memory", "pids"})
    v1: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        mount = root / controller
        if v2_mount == root or not (mount / "cgroup.procs").exists():
            continue
        if controller == "memory" and "memory" in v2_controllers:
            continue
        if controller == "pids" and "pids" in v2_controllers:
            continue
        if controller == "freezer" and v2_parent is not None and (v2_parent / "cgroup.kill").exists():
            continue
        candidate = _below(mount, own_v1.get(controller, "/")) / PARENT_NAME
        if _make_parent(candidate):
            v1[controller] = candidate
    memory = "v2" if "memory" in v2_controllers else ("v1" if "memory" in v1 else None)
    pids = "v2" if "pids" in v2_controllers else ("v1" if "pids" in v1 else None)
    if v2_parent is not None and (v2_parent / "cgroup.kill").exists():
        kill = "cgroup.kill"
    elif "freezer" in v1:
        kill = "freezer"
    else:
        kill = "signal"
    if v2_parent is None and not v1:
        return None
    return CgroupHost(v2=v2_parent, v1=v1, memory=memory, pids=pids, kill=kill)
