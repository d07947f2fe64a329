"""The per-process host stores that engines and features share: caches, downloads, purge poller.

generic-worker's mounts feature and the docker engine's ``cache`` must see one cache index and
one purge poller, or a purge request would reach only half the caches and two stores would race
on ``cachesDir``. ``host_state(config)`` returns the one ``HostState`` of a (cachesDir,
downloadsDir) pair in this process; ``await prepare_host_state(config)`` makes the directories
(0700), removes orphans of a crashed predecessor, adopts ``preloadedCaches`` and starts the
periodic purge poll — once, however many engines and features call it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcworker.mounts.caches import KIND_GENERIC, CacheStore
from tcworker.mounts.downloads import DownloadStore
from tcworker.mounts.purge import PurgePoller

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


@dataclass
class HostState:
    caches_dir: Path
    downloads_dir: Path
    caches: CacheStore
    downloads: DownloadStore
    purger: PurgePoller
    prepared: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_STATES: dict[tuple[str, str], HostState] = {}


def host_state(config: WorkerConfig) -> HostState:
    caches_dir = Path(os.path.abspath(config.cachesDir))
    downloads_dir = Path(os.path.abspath(config.downloadsDir))
    key = (str(caches_dir), str(downloads_dir))
    state = _STATES.get(key)
    if state is None:
        caches = CacheStore(caches_dir)
        # Best effort: a purge-cache outage must not hold every task up for the client's full retries.
        options: dict[str, Any] = {
            "rootUrl": config.rootURL,
            "credentials": config.credentials,
            "maxRetries": 1,
        }
        state = HostState(
            caches_dir=caches_dir,
            downloads_dir=downloads_dir,
            caches=caches,
            downloads=DownloadStore(downloads_dir),
            purger=PurgePoller(caches, options, config.task_queue_id),
        )
        _STATES[key] = state
    return state


def _make_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


async def prepare_host_state(config: WorkerConfig, *, background_purge: bool = True) -> HostState:
    """Create the stores' directories, sweep orphans, adopt preloaded caches (once per process)."""
    state = host_state(config)
    async with state.lock:
        if state.prepared:
            return state
        await asyncio.to_thread(_make_private, state.caches_dir)
        await asyncio.to_thread(_make_private, state.downloads_dir)
        await state.caches.remove_orphans()
        await state.downloads.remove_orphans()
        preloaded = getattr(config, "preloadedCaches", None) or {}
        for name, path in sorted(preloaded.items()):
            await state.caches.adopt(str(name), Path(str(path)), KIND_GENERIC)
        if background_purge:
            state.purger.start_background()
        state.prepared = True
    return state


async def shutdown_host_state(config: WorkerConfig) -> None:
    await host_state(config).purger.stop_background()
