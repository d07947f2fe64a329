"""The docker engine: docker-worker payloads (and generic-worker payloads) in containers (issue 5).

``DockerEngine`` is made once per worker: it checks that the Docker daemon answers, owns the
image store, the named caches, the purge-cache poller and the encryptedEnv key, and turns each
claimed run into a ``DockerSandbox`` (``tcworker.engines.docker.sandbox``). ``prepare`` does every check
that can refuse a task before anything runs, in this order: scopes (H7's docker-worker rules,
expanded through auth when needed) → features / capabilities → caches → encryptedEnv → purge
requests → image (pull / download + load) → cache leases.

Generic-worker payloads run each command in a container of the image named by config
``dockerImage`` (default ``DEFAULT_GENERIC_IMAGE``), the task directory bind-mounted at the same
path and used as the working directory; each command of theirs starts under the one-pipe wrapper
(``tcworker.engines.docker.onepipe``) when the image has ``/bin/sh``, which is probed once per image
id. Every container is created below its run's CPU group (``tcworker.engines.docker.cputime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from tcworker.engines.base import Engine, Mount, RunContext, Sandbox
from tcworker.engines.cgroups import task_limits
from tcworker.engines.docker import cputime, onepipe
from tcworker.engines.docker.images import ImageSpec, ImageStore, ResolvedImage
from tcworker.engines.docker.sandbox import LABEL_WORKER, DockerSandbox
from tcworker.errors import ConfigError, InternalError, MalformedPayload, TaskFailed
from tcworker.taskdirs import create_tasks_dir, task_dir_name

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)

DEFAULT_GENERIC_IMAGE = "debian:stable-slim"
API_TIMEOUT_SECONDS = 120


class DockerEngine(Engine):
    """``engine: docker`` — see the module docstring."""

    name = "docker"

    def __init__(self, kill_grace: float = 3.0) -> None:
        self.kill_grace = kill_grace  # SIGTERM → SIGKILL of an aborted container (not max run time)
        self._config: WorkerConfig | None = None
        self._client: docker.DockerClient | None = None
        self._stream_client: docker.DockerClient | None = None
        self._images: ImageStore | None = None
        self._live: set[DockerSandbox] = set()
        self._workdirs: dict[str, str] = {}  # image id → its WorkingDir
        self._commands: dict[str, onepipe.ImageCommand | None] = {}  # image id → wrapper facts (None: no sh)
        self._cpu: cputime.CpuAccounting | None = None

    def supported_payload_kinds(self) -> frozenset[str]:
        return frozenset({"generic", "docker"})

    @property
    def worker_label(self) -> str:
        config = self._require_config()
        return f"{config.workerGroup}/{config.workerId}"

    def _require_config(self) -> WorkerConfig:
        if self._config is None:
            raise InternalError("the docker engine was used before initialise()")
        return self._config

    async def initialise(self, config: WorkerConfig) -> None:
        """Connect to dockerd (``ConfigError`` when it does not answer) and set up the image store."""
        self._config = config
        create_tasks_dir(config.tasks_dir)
        try:
            client = await asyncio.to_thread(docker.from_env, timeout=API_TIMEOUT_SECONDS)
            await asyncio.to_thread(client.ping)
            # Streams (output, wait, events, save, load, pull) may be silent for longer than any API
            # timeout. Each running container holds three of its connections (attach, wait, die
            # event): a pool smaller than that would drop and reopen connections under load.
            self._stream_client = await asyncio.to_thread(
                docker.from_env, timeout=None, max_pool_size=max(10, 4 * config.capacity)
            )
            self._client = client
        except docker.errors.DockerException as e:
            raise ConfigError(
                f"engine 'docker' needs a running Docker daemon it can reach (DOCKER_HOST or "
                f"/var/run/docker.sock): {e}"
            ) from e
        self._images = ImageStore(self._stream_client, config.caches_dir / "docker-worker", config.downloads_dir)
        limits = task_limits(config)
        log.info(
            "per-task limits on every container: taskMaxProcesses=%d (pids_limit), "
            "taskMaxMemoryMegabytes=%d (mem_limit = memswap_limit)",
            limits.max_processes,
            limits.max_memory_megabytes,
        )
        await self._remove_leftovers()
        await self._set_up_cpu_accounting()

    async def _set_up_cpu_accounting(self) -> None:
        """Find where containers' CPU times can be read (``cputime``); clear a crashed
        predecessor's groups (after its containers are gone: a group in use cannot be removed)."""
        assert self._client is not None
        try:
            info = await asyncio.to_thread(self._client.info)
        except docker.errors.APIError as e:
            info = {}
            log.warning("docker info failed (%s)", e)
        found = await asyncio.to_thread(cputime.detect, info)
        if isinstance(found, str):
            log.warning("container CPU times are not measured (reported as 0): %s", found)
            return
        self._cpu = found
        log.info("%s", found.describe())
        stale = await asyncio.to_thread(found.remove_stale)
        if stale:
            log.info("removed %d CPU groups of earlier worker processes", len(stale))

    async def _remove_leftovers(self) -> None:
        """Containers labelled with this worker's id are leftovers of a crashed predecessor."""
        assert self._client is not None
        found = await asyncio.to_thread(
            self._client.containers.list, all=True, filters={"label": f"{LABEL_WORKER}={self.worker_label}"}
        )
        for container in found:
            log.warning("removing leftover container %s of an earlier worker process", container.name)
            with contextlib.suppress(docker.errors.APIError):
                await asyncio.to_thread(container.remove, v=True, force=True)
        networks = await asyncio.to_thread(
            self._client.networks.list, filters={"label": f"{LABEL_WORKER}={self.worker_label}"}
        )
        for network in networks:
            log.warning("removing leftover network %s of an earlier worker process", network.name)
            with contextlib.suppress(docker.errors.APIError):
                await asyncio.to_thread(network.remove)

    async def prepare(self, run: RunContext) -> Sandbox:
        config = self._require_config()
        assert self._client and self._stream_client and self._images
        if run.payload_kind == "docker":
            spec = ImageSpec.from_payload(run.payload["image"])
        else:
            spec = ImageSpec(kind="docker-image", name=config.dockerImage or DEFAULT_GENERIC_IMAGE)
        task_dir = config.tasks_dir / task_dir_name(run.task_id, run.run_id)
        await asyncio.to_thread(task_dir.mkdir, parents=True, exist_ok=True)
        image = await self._resolve_image(spec, run)  # also stamps its use for the image GC
        workdir = await self._image_workdir(image)
        one_pipe = await self._image_command(image) if run.payload_kind == "generic" else None
        run.log.info(f"Using docker image {image.ref} ({image.id})")
        sandbox = DockerSandbox(
            client=self._client,
            stream_client=self._stream_client,
            run=run,
            task_dir=task_dir,
            image=image,
            image_workdir=workdir,
            worker_label=self.worker_label,
            on_destroy=self._live.discard,
            grace=self.kill_grace,
            clean_up=bool(config.cleanUpTaskDirs),
            limits=task_limits(config),
            one_pipe=one_pipe,
            cpu=self._cpu.for_run(task_dir.name) if self._cpu is not None else None,
        )
        if run.payload_kind == "docker":
            volumes = await asyncio.to_thread(_volume_dirs, run.payload, task_dir)
            for mount in volumes:
                sandbox.add_mount(mount)
        self._live.add(sandbox)
        return sandbox

    async def _image_workdir(self, image: ResolvedImage) -> str:
        """The image's ``WorkingDir``, inspected once per image id (an id names immutable content,
        so the answer never changes; a tag moved to another image has another id)."""
        assert self._client is not None
        workdir = self._workdirs.get(image.id)
        if workdir is None:
            try:
                inspected = await asyncio.to_thread(self._client.api.inspect_image, image.id)
            except docker.errors.APIError as e:
                raise InternalError(f"cannot inspect image {image.ref}: {e}") from e
            workdir = str((inspected.get("Config") or {}).get("WorkingDir") or "/")
            self._workdirs[image.id] = workdir
        return workdir

    async def _image_command(self, image: ResolvedImage) -> onepipe.ImageCommand | None:
        """What the one-pipe wrapper needs of a generic payload's image, or ``None`` when the image
        has no ``/bin/sh`` (probed and inspected once per image id: its content never changes)."""
        assert self._client is not None
        if image.id not in self._commands:
            labels = {LABEL_WORKER: self.worker_label}
            if await onepipe.image_has_sh(self._client.api, image.id, labels):
                try:
                    inspected = await asyncio.to_thread(self._client.api.inspect_image, image.id)
                except docker.errors.APIError as e:
                    raise InternalError(f"cannot inspect image {image.ref}: {e}") from e
                self._commands[image.id] = onepipe.ImageCommand.from_inspect(inspected)
            else:
                log.warning(
                    "image %s has no /bin/sh: generic-worker commands in it run with stdout and stderr "
                    "as two streams (their order in the log is dockerd's)",
                    image.ref,
                )
                self._commands[image.id] = None
        return self._commands[image.id]

    async def _resolve_image(self, spec: ImageSpec, run: RunContext) -> ResolvedImage:
        """The run's image. One the task named that cannot be had fails the task (docker-worker's
        rule, raised by the image store); the worker's own ``dockerImage`` (generic-worker payloads)
        that cannot be had is a worker problem: ``internal-error`` naming the config key."""
        assert self._images is not None
        try:
            return await self._images.resolve(spec, run)
        except TaskFailed as e:
            if run.payload_kind == "docker":
                raise
            raise InternalError(
                f"this worker's image for generic-worker payloads (config key dockerImage = "
                f"{spec.name!r}) cannot be used: {e}"
            ) from e

    async def garbage_collect(self, required_free_bytes: int) -> None:
        """Evict least recently used images until ``tasksDir``'s file system has enough room."""
        config = self._require_config()
        if self._images is None:
            return
        keep = {s.image.id for s in self._live} | {s.image.ref for s in self._live}
        await self._images.collect_garbage(config.tasks_dir, required_free_bytes, keep)

    async def shutdown(self) -> None:
        for client in (self._client, self._stream_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(client.close)


def _volume_dirs(payload: Any, task_dir: Path) -> list[Mount]:
    """D2G's ``volume`` artifacts (spec/worker.md §3.9): a fresh host directory per path, bind-mounted
    there so the task can write to it, and read back from the host after the run."""
    mounts: list[Mount] = []
    artifacts = payload.get("artifacts") or {}
    paths = sorted({str(a.get("path")) for a in artifacts.values() if isinstance(a, dict) and a.get("type") == "volume"})
    for i, path in enumerate(paths):
        norm = posixpath.normpath(path)
        if not norm.startswith("/") or norm == "/":
            raise MalformedPayload(f"volume artifact path {path!r} must be an absolute path below /")
        host = task_dir / "volumes" / str(i)
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o777)  # images with a non-root USER must be able to write their output
        mounts.append(Mount(host, norm))
    return mounts
