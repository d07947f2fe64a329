"""The per-process host stores that features share: caches, downloads, purge poller.

generic-worker's ``mounts`` and docker-worker's ``cache`` must see one cache index and one purge
poller, or a purge request would reach only half the caches and two stores would race on
``cachesDir``. ``host_state(config)`` returns the one ``HostState`` of a (cachesDir,
downloadsDir) pair in this process; ``await prepare_host_state(config, clients)`` makes the
directories (0700), removes orphans of a crashed predecessor, adopts ``preloadedCaches`` and
starts the periodic purge poll — once, however many features call it; ``shutdown_host_state``
stops the poll (idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tcworker.caches.purge import PurgePoller
from tcworker.caches.store import KIND_GENERIC, CacheStore
from tcworker.mounts.downloads import DownloadStore

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.tcapi.clients import Clients

PURGE_POLL_SECONDS = 300.0


@dataclass
class HostState:
    caches_dir: Path
    downloads_dir: Path
    caches: CacheStore
    downloads: DownloadStore
    purger: PurgePoller | None = None  # set by prepare_host_state (it needs the clients)
    prepared: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    poll_loop: asyncio.Task[None] | None = None

    async def poll_purge_requests(self) -> int:
        return 0 if self.purger is None else await self.purger.poll()


_STATES: dict[tuple[str, str], HostState] = {}


def host_state(config: WorkerConfig) -> HostState:
    caches_dir = Path(os.path.abspath(config.cachesDir))
    downloads_dir = Path(os.path.abspath(config.downloadsDir))
    key = (str(caches_dir), str(downloads_dir))
    state = _STATES.get(key)
    if state is None:
        state = HostState(
            caches_dir=caches_dir,
            downloads_dir=downloads_dir,
            caches=CacheStore(caches_dir),
            downloads=DownloadStore(downloads_dir),
        )
        _STATES[key] = state
    return state


def _make_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


async def prepare_host_state(config: WorkerConfig, clients: Clients) -> HostState:
    """Create the stores' directories, sweep orphans, adopt preloaded caches and start the purge
    poll (once per process)."""
    state = host_state(config)
    async with state.lock:
        if state.prepared:
            return state
        # Best effort: a purge-cache outage must not hold every task up for the client's full retries.
        state.purger = PurgePoller(state.caches, lambda: clients.purge_cache(retries=1), config.task_queue_id)
        await asyncio.to_thread(_make_private, state.caches_dir)
        await asyncio.to_thread(_make_private, state.downloads_dir)
        await state.caches.remove_orphans()
        await state.downloads.remove_orphans()
        preloaded = getattr(config, "preloadedCaches", None) or {}
        for name, path in sorted(preloaded.items()):
            await state.caches.adopt(str(name), Path(str(path)), KIND_GENERIC)
        state.poll_loop = asyncio.get_running_loop().create_task(state.purger.run_forever(PURGE_POLL_SECONDS))
        state.prepared = True
    return state


async def shutdown_host_state(config: WorkerConfig) -> None:
    state = host_state(config)
    task, state.poll_loop = state.poll_loop, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
