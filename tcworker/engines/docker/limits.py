"""``taskMaxProcesses`` / ``taskMaxMemoryMegabytes`` on a task's containers, and what they hit.

Why here and not in the host cgroups module: Docker makes the container's cgroup itself, so the
limits are Docker's own ``pids_limit`` and ``mem_limit`` (with ``memswap_limit`` equal to it: no
swap beyond the memory limit), and the facts come from Docker (``State.OOMKilled``) and from the
kernel's ``pids.events`` of the container's group. That group disappears when the container
stops, so ``PidsWatch`` reads its counter while the container runs (every ``POLL`` seconds and
once more when it has exited); a host that does not show the container's group (a remote
daemon) gets a line saying the count cannot be known.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from tcworker.engines.cgroups import CGROUP_ROOT, TaskLimits, own_groups

POLL = 0.05  # a fork loop can fill pids.max and die within a few tenths of a second


def create_kwargs(limits: TaskLimits) -> dict[str, Any]:
    """The ``containers.create`` arguments that apply ``limits`` to one container."""
    return {
        "pids_limit": limits.max_processes,
        "mem_limit": limits.max_memory_bytes,
        "memswap_limit": limits.max_memory_bytes,
    }


def pids_events_path(pid: int, root: Path = CGROUP_ROOT) -> Path | None:
    """``pids.events`` of the cgroup process ``pid`` is in (v1 ``pids`` hierarchy, else v2)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    v2, v1 = own_groups(text)
    candidates = []
    if "pids" in v1:
        candidates.append(root / "pids" / v1["pids"].lstrip("/"))
    if v2 is not None:
        candidates += [root / v2.lstrip("/"), root / "unified" / v2.lstrip("/")]
    for directory in candidates:
        if (directory / "pids.events").exists():
            return directory / "pids.events"
    return None


def _refused(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
    except (OSError, ValueError):
        return None
    return 0


class PidsWatch:
    """Follows the ``max`` count of one container's ``pids.events`` while it runs."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.refused = 0
        self.visible = False

    async def follow(self, pid: int) -> None:
        """Poll until cancelled (the caller cancels it once the container has exited)."""
        self.path = await asyncio.to_thread(pids_events_path, pid)
        if self.path is None:
            return
        self.visible = True
        while True:
            self.read()
            await asyncio.sleep(POLL)

    def read(self) -> None:
        if self.path is not None:
            count = _refused(self.path)
            if count is not None:
                self.refused = max(self.refused, count)


def limit_hits(limits: TaskLimits, oom_killed: bool, watch: PidsWatch) -> tuple[str, ...]:
    """The task-log lines for the limits a container hit (empty: none)."""
    hits: list[str] = []
    if watch.refused > 0:
        hits.append(
            f"task hit taskMaxProcesses={limits.max_processes} (pids_limit): "
            f"{watch.refused} fork{'s' if watch.refused != 1 else ''} refused"
        )
    if oom_killed:
        hits.append(
            f"task was OOM-killed: taskMaxMemoryMegabytes={limits.max_memory_megabytes} (container memory limit)"
        )
    return tuple(hits)


def unseen_pids_note(limits: TaskLimits, watch: PidsWatch, exit_code: int) -> str | None:
    """When a container failed and its fork count could not be read: say so, naming the limit."""
    if watch.visible or exit_code == 0:
        return None
    return (
        f"the container ran with taskMaxProcesses={limits.max_processes} (pids_limit); this host does "
        "not show the container's pids.events, so whether a fork was refused is unknown"
    )


async def stop(task: asyncio.Task[None] | None, watch: PidsWatch) -> None:
    """End a ``follow`` task and take the last reading."""
    if task is None:
        return
    watch.read()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
