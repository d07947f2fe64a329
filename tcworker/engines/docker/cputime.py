"""A container's CPU time (user and system), read from a cgroup of the run that outlives it.

Why a group of the run's own: the container's own cgroup is removed as soon as its main process
has exited (before dockerd even sends the ``die`` event), so nothing of it is left to read when
the engine learns of the exit, and reading it while the container runs would miss its last part.
The kernel, however, charges a process's CPU time to every ancestor group too, and a removed
child's share stays in its parent. So each sandbox creates its containers with ``cgroup_parent`` =
``/tcworker-docker/<run>-w<worker pid>`` (Docker's ``cgroupfs`` driver nests ``<container id>``
under it in every hierarchy), and a command's CPU time is the difference of that parent's counters
before and after its container: exact, one small file read per command, no polling.

Which counters: cgroup v1 ``cpuacct.usage`` (exact nanoseconds) split by ``cpuacct.usage_user`` /
``cpuacct.usage_sys`` (sampled at timer ticks, so alone they are off by up to a tick per
switch; the split follows the kernel's own rule for ``getrusage``, ``cputime_adjust``: the exact
total in the sampled ratio, all of it on the one side when the other saw no tick); cgroup v2
``cpu.stat`` ``usage_usec`` / ``user_usec`` / ``system_usec`` with the same rule. The groups are
removed with the sandbox; those of a worker process that is gone are removed at the next start
(``remove_stale``). With the ``systemd`` cgroup driver (its parents must be slices), a remote
daemon or a hierarchy this process cannot see, CPU times are not measured (reported as 0, said
once in the worker log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcworker.engines.cgroups import group_name, worker_pid_of

log = logging.getLogger(__name__)

TOP_GROUP = "tcworker-docker"  # not the host engines' ``tcworker``: their stale sweep would take it
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class CpuCounters:
    """A group's cumulative CPU counters, in nanoseconds (``user``/``system`` tick-sampled)."""

    total: int
    user: int
    system: int

    def minus(self, earlier: CpuCounters) -> CpuCounters:
        return CpuCounters(self.total - earlier.total, self.user - earlier.user, self.system - earlier.system)

    def seconds(self) -> tuple[float, float]:
        """(user, system) seconds: the exact total split in the sampled ratio (``cputime_adjust``)."""
        total = max(self.total, 0)
        user, system = max(self.user, 0), max(self.system, 0)
        if system == 0:
            return total / 1e9, 0.0
        if user == 0:
            return 0.0, total / 1e9
        system_share = total * system // (user + system)
        return (total - system_share) / 1e9, system_share / 1e9


ZERO = CpuCounters(0, 0, 0)


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup hierarchy mounted in this process's view."""

    path: Path
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: the hierarchy's controllers; v2: empty


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup hierarchies of ``/proc/self/mountinfo`` whose root is the hierarchy's root (a
    mount of a subgroup would not show the groups dockerd makes at the top)."""
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue
        fstype, options = tail[0], tail[2]
        if fstype == "cgroup2":
            mounts.append(CgroupMount(Path(fields[4]), 2, frozenset()))
        elif fstype == "cgroup":
            mounts.append(CgroupMount(Path(fields[4]), 1, frozenset(options.split(","))))
    return mounts


class RunCpu:
    """The CPU group of one sandbox: its ``cgroup_parent`` and the counters under it."""

    def __init__(self, accounting: CpuAccounting, name: str) -> None:
        self.accounting = accounting
        self.name = name

    @property
    def cgroup_parent(self) -> str:
        return f"/{TOP_GROUP}/{self.name}"

    def read(self) -> CpuCounters | None:
        """The counters now (blocking: a few small reads); ``None`` when the group is not there
        (before the first container started, or when dockerd put it elsewhere)."""
        directory = self.accounting.counter_mount.path / TOP_GROUP / self.name
        try:
            if self.accounting.counter_mount.version == 1:
                total = int((directory / "cpuacct.usage").read_text())
                user = int((directory / "cpuacct.usage_user").read_text())
                system = int((directory / "cpuacct.usage_sys").read_text())
                return CpuCounters(total, user, system)
            stat = _keyed((directory / "cpu.stat").read_text())
            return CpuCounters(
                stat["usage_usec"] * 1000, stat["user_usec"] * 1000, stat["system_usec"] * 1000
            )
        except (OSError, ValueError, KeyError):
            return None

    def remove(self) -> None:
        """Remove the (empty, all containers gone) group from every hierarchy (blocking)."""
        for mount in self.accounting.mounts:
            with contextlib.suppress(OSError):
                (mount.path / TOP_GROUP / self.name).rmdir()


class CpuAccounting:
    """Where this host's containers' CPU groups are read (``detect``); one per engine."""

    def __init__(self, mounts: list[CgroupMount], counter_mount: CgroupMount) -> None:
        self.mounts = mounts
        self.counter_mount = counter_mount

    def for_run(self, run_name: str) -> RunCpu:
        return RunCpu(self, group_name(f"{run_name}-{uuid.uuid4().hex[:8]}"))

    def describe(self) -> str:
        files = "cpuacct.usage*" if self.counter_mount.version == 1 else "cpu.stat"
        where = self.counter_mount.path / TOP_GROUP
        return f"container CPU times from {files} of each run's group under {where}"

    def remove_stale(self) -> list[str]:
        """Remove the groups of worker processes that are gone (a crash leaves them, empty once
        its containers are removed); a group still in use is refused by the kernel and kept."""
        removed: set[str] = set()
        for mount in self.mounts:
            top = mount.path / TOP_GROUP
            try:
                children = [child for child in top.iterdir() if child.is_dir()]
            except OSError:
                continue
            for child in children:
                owner = worker_pid_of(child.name)
                if owner is None or owner == os.getpid() or os.path.exists(f"/proc/{owner}"):
                    continue
                with contextlib.suppress(OSError):
                    child.rmdir()
                    removed.add(child.name)
        return sorted(removed)


def detect(info: Mapping[str, Any], mountinfo: str | None = None) -> CpuAccounting | str:
    """The host's ``CpuAccounting`` from ``docker info`` and this process's mounts, or the
    reason why container CPU times cannot be measured here."""
    driver = str(info.get("CgroupDriver") or "")
    if driver != "cgroupfs":
        return f"dockerd uses the {driver or 'unknown'} cgroup driver (only cgroupfs nests a run's group)"
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError as e:
            return f"cannot read {MOUNTINFO}: {e.strerror}"
    mounts = cgroup_mounts(mountinfo)
    version = str(info.get("CgroupVersion") or "1")
    if version == "2":
        counter = next((m for m in mounts if m.version == 2), None)
    else:
        counter = next((m for m in mounts if m.version == 1 and "cpuacct" in m.controllers), None)
    if counter is None:
        return f"no cgroup v{version} hierarchy with CPU accounting is mounted where this worker can read it"
    return CpuAccounting(mounts, counter)


def _keyed(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values
