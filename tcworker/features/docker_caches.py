"""docker-worker's ``payload.cache``: named writable caches bind-mounted into the container.

Each cache name is a pool of host directories in the one cache store of the process
(``tcworker.caches.store``, kind ``docker-worker``, shared with generic-worker mounts through
``tcworker.mounts.hoststate``); a run borrows one instance per name at ``start`` (after applying
purge-cache requests, which are also polled every five minutes) and gives it back at ``stop`` — deleted instead when the last exit code is
listed in ``onExitStatus.purgeCaches`` (spec/worker.md §3.7). With ``features.dockerSave`` every
cache is also published as ``public/cache/<name>.tar``. The scope ``docker-worker:cache:<name>``
is the scope rules feature's.
"""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path

from tcworker import tctime
from tcworker.caches.purge import PurgePoller
from tcworker.caches.store import KIND_DOCKER, CacheLease, CacheStore, cache_dir_name, parse_cache_payload
from tcworker.config import WorkerConfig
from tcworker.engines.base import Mount
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.mounts.hoststate import prepare_host_state, shutdown_host_state
from tcworker.tcapi.clients import Clients

SAVED_CACHE_DAYS = 7


class DockerCachesFeature(Feature):
    name = "dockerCaches"

    def __init__(self) -> None:
        self.store: CacheStore | None = None
        self.purger: PurgePoller | None = None
        self._config: WorkerConfig | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if config.engine != "docker":
            return
        # The one cache store and purge poller of this process, shared with generic-worker mounts.
        state = await prepare_host_state(config, clients)
        self.store, self.purger, self._config = state.caches, state.purger, config

    async def shutdown(self) -> None:
        if self._config is not None:
            await shutdown_host_state(self._config)

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "docker" or not run.payload.get("cache"):
            return None
        return _Caches(self, run)


class _Caches(TaskFeature):
    def __init__(self, feature: DockerCachesFeature, run: RunHandle) -> None:
        self.feature = feature
        self.run = run
        self.mounts: dict[str, str] = {}
        self.leases: list[CacheLease] = []

    async def admit(self) -> None:
        self.mounts = parse_cache_payload(self.run.payload.get("cache") or {})

    async def start(self) -> None:
        store, purger = self.feature.store, self.feature.purger
        assert store is not None and purger is not None, "docker caches need the docker engine"
        await purger.poll()
        self.leases = await store.acquire(self.mounts, KIND_DOCKER)
        for lease in self.leases:
            self.run.sandbox.add_mount(Mount(lease.host_dir, lease.mount_path))

    async def stop(self, outcome: RunOutcome) -> None:
        if not self.leases:
            return
        store = self.feature.store
        assert store is not None
        try:
            if payload_feature_flag(self.run.payload, "dockerSave") and outcome.commands_started:
                await self._publish()
        finally:
            last = outcome.last_result.exit_code if outcome.last_result is not None else None
            purge_on = (self.run.payload.get("onExitStatus") or {}).get("purgeCaches") or []
            purge = last is not None and last in purge_on
            if purge:
                self.run.log.info(f"Exit code {last} is listed in onExitStatus.purgeCaches: purging caches")
            await store.release(self.leases, purge=purge)

    async def _publish(self) -> None:
        """dockerSave: each cache as ``public/cache/<name>.tar``, expiring with the saved image."""
        expires = tctime.from_now(SAVED_CACHE_DAYS * 24 * 3600)
        task_expires = self.run.task.get("expires")
        if isinstance(task_expires, str):
            expires = min(expires, tctime.parse(task_expires))
        out_dir = self.run.scratch_dir / "saved-caches"
        for lease in self.leases:
            tarball = await asyncio.to_thread(_tar_cache, lease, out_dir)
            if tarball is not None:
                await self.run.publisher.upload_file(
                    f"public/cache/{lease.name}.tar", tarball, "application/x-tar", tctime.to_json(expires)
                )


def _tar_cache(lease: CacheLease, out_dir: Path) -> Path | None:
    """One tar per cache (contents at the archive root; symlinks stored as links, not followed)."""
    if not lease.host_dir.is_dir():
        return None
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = out_dir / f"cache-{cache_dir_name(lease.name)}.tar"
    with tarfile.open(dest, "w") as tf:
        for entry in sorted(lease.host_dir.iterdir()):
            tf.add(entry, arcname=entry.name, recursive=True)
    return dest
