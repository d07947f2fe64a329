"""The mounts feature: generic-worker's ``payload.mounts`` (spec/worker.md §2.5, issue 12).

``admit`` checks the payload before the engine prepares anything (missing dependencies, formats
this worker cannot decode, targets the engine cannot serve → malformed-payload naming each; the
``generic-worker:cache:<name>`` scopes are checked by the pipeline through ``required_scopes``).
``start`` (before the commands) polls purge requests when a writable cache is used, then mounts in
payload order, stopping at the first failure (failed): content is obtained through the shared
downloads store, archives are extracted safely off the event loop into a worker-private place,
and the result is moved to its target (created with the task user's rights) and handed to the
task user. ``stop`` runs after the artifacts were collected (the feature sits before
``artifacts`` in ``FEATURES``): writable caches are moved back into the cache store — or
deleted when the run was aborted or its last exit code is listed in
``onExitStatus.purgeCaches`` — and everything else goes with the task directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from tcworker.caches.store import KIND_GENERIC, CacheLease
from tcworker.config import WorkerConfig
from tcworker.errors import MalformedPayload, TaskError, TaskFailed
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.mounts import content as content_mod
from tcworker.mounts import extract as extract_mod
from tcworker.mounts import spec as spec_mod
from tcworker.mounts.downloads import Download, sha256_file
from tcworker.mounts.hoststate import HostState, host_state, prepare_host_state, shutdown_host_state
from tcworker.mounts.placement import Placed, PlacementError, place, resolve_target, take_back
from tcworker.tcapi.clients import Clients


class MountsFeature(Feature):
    name = "mounts"
    config_gate = "enableMounts"

    def __init__(self) -> None:
        self._state: HostState | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        self._state = await prepare_host_state(config, clients)
        self._state_config = config

    async def shutdown(self) -> None:
        if self._state is not None:
            await shutdown_host_state(self._state_config)

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "generic" or not run.payload.get("mounts"):
            return None
        return MountsTaskFeature(run, self._state or host_state(run.config))


@dataclass
class _MountedCache:
    lease: CacheLease
    placed: Placed | None


class MountsTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle, state: HostState) -> None:
        self.run = run
        self.state = state
        self.mounts = spec_mod.parse_mounts(run.payload)
        self._caches: list[_MountedCache] = []

    def required_scopes(self) -> list[str]:
        return spec_mod.required_scopes(self.mounts)

    async def admit(self) -> None:
        run = self.run
        problems = spec_mod.payload_problems(self.mounts, run.task, engine_name=run.engine_name)
        if problems:
            for problem in problems:
                run.log.error(problem)
            raise MalformedPayload("; ".join(problems))

    async def start(self) -> None:
        run = self.run
        if any(m.kind == spec_mod.WRITABLE_CACHE for m in self.mounts):
            await self.state.poll_purge_requests()
        for i, mount in enumerate(self.mounts):
            try:
                await self._mount(i, mount)
            except TaskError:
                raise
            except (OSError, PlacementError, extract_mod.UnsafeArchive) as e:
                run.log.error(f"[mounts] {mount.describe()}: {e}")
                raise TaskFailed(f"[mounts] cannot mount {mount.describe()}: {e}") from e

    # ---- mounting --------------------------------------------------------------------------
    async def _download(self, mount: spec_mod.Mount, *, inline_verify: bool) -> Download:
        assert mount.content is not None
        source = await content_mod.resolve(
            mount.content, self.run.queue, self.run.clients.index(self.run.credentials)
        )
        download = await self.state.downloads.obtain(
            source.key,
            source.fetch,
            describe=source.describe,
            required_sha256=source.sha256,
            task_log=self.run.log,
            verify_later=inline_verify,
        )
        self.run.resolved_inputs.append(self._input_descriptor(source, download))
        return download

    def _input_descriptor(self, source: content_mod.Source, download: Download) -> dict[str, object]:
        """The mounted content as a SLSA resource descriptor (chainOfTrust signs the list)."""
        descriptor: dict[str, object] = {"name": source.describe, "digest": {"sha256": download.sha256}}
        kind, _, rest = source.key.partition(":")
        if kind == "urlcontent":
            descriptor["uri"] = rest
        elif kind == "artifact":
            task_id, _, artifact = rest.partition(":")
            descriptor["uri"] = f"{self.run.root_url}/api/queue/v1/task/{task_id}/artifacts/{artifact}"
        return descriptor

    async def _unpack(self, mount: spec_mod.Mount, dest: Path) -> None:
        """Extract the mount's archive content into the empty directory ``dest``."""
        assert mount.format is not None
        is_tar = mount.format.startswith("tar")
        dl = await self._download(mount, inline_verify=is_tar)
        try:
            digest = hashlib.sha256() if not dl.verified else None
            try:
                await asyncio.to_thread(extract_mod.extract, dl.path, mount.format, dest, digest)
            except extract_mod.UnsafeArchive as e:
                if digest is not None:  # a corrupt stored file fails the same way: check it first
                    await self.state.downloads.confirm(dl, await asyncio.to_thread(sha256_file, dl.path))
                raise TaskFailed(f"[mounts] {mount.describe()}: {e}") from e
            if digest is not None:
                try:
                    await self.state.downloads.confirm(dl, digest.hexdigest())
                except TaskError:
                    await asyncio.to_thread(extract_mod._empty, dest)
                    raise
        finally:
            await self.state.downloads.release(dl)
        self.run.log.info(f"[mounts] Extracted {mount.format} content into {mount.target}")

    async def _put(self, src: Path, target: Path, *, replace_file: bool = False) -> Placed:
        sandbox = self.run.sandbox
        try:
            await sandbox.make_dirs(target.parent)
        except OSError as e:
            raise PlacementError(f"the task user cannot create {target.parent}: {e}") from e
        placed = await asyncio.to_thread(place, src, target, replace_file=replace_file)
        await asyncio.to_thread(sandbox.give_to_task, target)
        return placed

    async def _mount(self, i: int, mount: spec_mod.Mount) -> None:
        run = self.run
        target = resolve_target(run.sandbox.task_dir, mount.target)
        if mount.kind == spec_mod.WRITABLE_CACHE:
            await self._mount_cache(mount, target)
            return
        staging = run.scratch_dir / f"mount-{i}"
        if mount.kind == spec_mod.READ_ONLY_DIRECTORY:
            await asyncio.to_thread(staging.mkdir, mode=0o700, parents=True)
            await self._unpack(mount, staging)
            await self._put(staging, target)
            run.log.info(f"[mounts] Mounted read-only directory {mount.target}")
            return
        dl = await self._download(mount, inline_verify=False)
        try:
            await asyncio.to_thread(staging.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
            if mount.format:
                await asyncio.to_thread(extract_mod.decompress_file, dl.path, mount.format, staging)
            else:
                await asyncio.to_thread(shutil.copyfile, dl.path, staging)
        finally:
            await self.state.downloads.release(dl)
        await self._put(staging, target, replace_file=True)
        run.log.info(f"[mounts] Mounted file {mount.target}")

    async def _mount_cache(self, mount: spec_mod.Mount, target: Path) -> None:
        caches = self.state.caches
        (lease,) = await caches.acquire([(mount.cache_name, str(target))], KIND_GENERIC)
        record = _MountedCache(lease, None)
        self._caches.append(record)
        if lease.fresh:
            self.run.log.info(f"[mounts] Creating new writable directory cache {mount.cache_name!r}")
            if mount.content is not None:
                await self._unpack(mount, lease.host_dir)
        else:
            self.run.log.info(
                f"[mounts] Moving existing writable directory cache {mount.cache_name} from "
                f"{lease.host_dir} to {target}"
            )
        record.placed = await self._put(lease.host_dir, target)

    # ---- unmounting ----------------------------------------------------------------------------
    def _purge_reason(self, outcome: RunOutcome) -> str | None:
        if outcome.aborted:
            return f"the task was aborted ({outcome.abort_reason})"
        last = outcome.last_result
        codes = self.run.model.purge_caches_codes
        if last is not None and last.exit_code in codes:
            return f"exit code {last.exit_code} is listed in onExitStatus.purgeCaches"
        return None

    async def stop(self, outcome: RunOutcome) -> None:
        if not self._caches:
            return
        log = self.run.log
        reason = self._purge_reason(outcome)
        if reason:
            log.info(f"[mounts] Purging caches since {reason}")
        caches = self.state.caches
        for record in reversed(self._caches):
            lease = record.lease
            home = caches.home_of(lease.kind, lease.name, lease.instance)
            returned: dict[str, Path] = {}
            unfinished = record.placed is None  # its own mount failed: never keep half a cache
            if unfinished:
                returned[lease.instance] = lease.host_dir
            elif record.placed is not None and await asyncio.to_thread(take_back, record.placed, home):
                returned[lease.instance] = home
            else:
                log.warn(
                    f"[mounts] Cache {lease.name} at {record.placed.target} was moved, replaced or linked "
                    "by the task: dropping it"
                )
            if reason or unfinished or caches.is_doomed(lease) or not returned:
                if caches.is_doomed(lease) and not reason:
                    log.info(f"[mounts] Cache {lease.name} was purged while in use")
                log.info(f"[mounts] Removing cache {lease.name} from cache table")
                if returned:
                    log.info(f"[mounts] Deleting cache {lease.name} file(s) at {returned[lease.instance]}")
                await caches.release([lease], purge=True, returned_to=returned)
            else:
                log.info(
                    f"[mounts] Preserving cache: Moving {record.placed.target if record.placed else ''} to {home}"
                )
                await caches.release([lease], returned_to=returned)
