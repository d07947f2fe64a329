"""Disk-space garbage collection before each claim (spec/worker.md §1.9, issue 12).

Free space on the file systems of ``tasksDir`` and ``cachesDir`` must reach
``requiredDiskSpaceMegabytes``. Orphans (partial downloads, cache directories no index knows)
go first; then idle downloads and idle writable caches, least recently used first, one at a
time until there is room; then the engine's own collector (docker images) if it has one. Nothing
in use by a running task is ever removed (orphans are looked for at most once a minute unless
space is short). ``False`` means there is still not enough room: the
worker loop then skips claiming (or exits 69 when idle, as generic-worker does).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcworker.mounts.hoststate import host_state

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)


def _free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _shortfall(paths: list[Path], required: int) -> list[tuple[Path, int]]:
    out: list[tuple[Path, int]] = []
    for path in paths:
        free = _free(path)
        if free < required:
            out.append((path, free))
    return out


async def shortfall(paths: list[Path], required: int) -> list[tuple[Path, int]]:
    """(path, free bytes) of each path whose file system has less than ``required`` free.
    Inline: two ``statvfs`` cost less than a thread trip before every claim (see taskdirs)."""
    return _shortfall(paths, required)


# Orphans appear only when a worker dies mid-download or mid-cache-move, so looking for them
# before every claim (two directory walks) is wasted work at hundreds of tasks a minute: they
# are looked for at the first GC of the process, whenever space is short, and at most this
# often otherwise.
ORPHAN_SWEEP_INTERVAL = 60.0
_last_sweep: dict[Path, float] = {}


async def ensure_disk_space(config: WorkerConfig, engine: Any = None) -> bool:
    """Bring free space up to ``requiredDiskSpaceMegabytes``; ``True`` when there is enough."""
    required = int(config.requiredDiskSpaceMegabytes) * 1024 * 1024
    state = host_state(config)
    paths = [config.tasks_dir, state.caches_dir]
    short = await shortfall(paths, required)
    now = time.monotonic()
    last = _last_sweep.get(state.caches_dir)
    if short or last is None or now - last >= ORPHAN_SWEEP_INTERVAL:
        _last_sweep[state.caches_dir] = now
        await state.downloads.remove_orphans()
        await state.caches.remove_orphans()
        short = await shortfall(paths, required)
    if short:
        downloads = [(t, "download", sha) for t, sha in await state.downloads.idle_files()]
        caches = [(t, "cache", iid) for t, iid, _ in await state.caches.idle_instances()]
        for _, what, ident in sorted(downloads + caches):
            if what == "download":
                evicted = await state.downloads.evict(ident)
            else:
                evicted = await state.caches.evict(ident)
            if evicted:
                log.info("disk GC: evicted %s %s", what, ident)
            short = await shortfall(paths, required)
            if not short:
                break
    else:
        await state.caches.trim_idle(max(1, int(config.capacity)))
    if short and engine is not None:
        await engine.garbage_collect(required)  # docker: unused images, least recently used first
        short = await shortfall(paths, required)
    for path, free in short:
        log.error(
            "only %d MiB free in %s after garbage collection; requiredDiskSpaceMegabytes is %d",
            free // (1024 * 1024),
            path,
            config.requiredDiskSpaceMegabytes,
        )
    return not short
