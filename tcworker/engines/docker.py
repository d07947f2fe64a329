"""The docker engine: docker-worker payloads (and generic-worker payloads) in containers (issue 5).

``DockerEngine`` is made once per worker: it checks that the Docker daemon answers, owns the
image store, the named caches, the purge-cache poller and the encryptedEnv key, and turns each
claimed run into a ``DockerSandbox`` (``tcworker.docker.sandbox``). ``prepare`` does every check
that can refuse a task before anything runs, in this order: scopes (H7's docker-worker rules,
expanded through auth when needed) → features / capabilities → caches → encryptedEnv → purge
requests → image (pull / download + load) → cache leases.

Generic-worker payloads run each command in a container of the image named by config
``dockerImage`` (default ``DEFAULT_GENERIC_IMAGE``), the task directory bind-mounted at the same
path and used as the working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from tcworker.docker.caches import parse_cache_payload
from tcworker.docker.containeropts import ContainerOptions, container_options
from tcworker.docker.encrypted_env import PrivateKey, decrypt_env, load_private_key
from tcworker.docker.images import ImageSpec, ImageStore
from tcworker.docker.sandbox import LABEL_WORKER, DockerSandbox
from tcworker.docker.scopes import check_scopes
from tcworker.engines.base import RunContext, Sandbox
from tcworker.errors import ConfigError, InternalError, MalformedPayload
from tcworker.mounts.caches import KIND_DOCKER, CacheStore
from tcworker.mounts.hoststate import prepare_host_state, shutdown_host_state
from tcworker.mounts.purge import PurgePoller
from tcworker.worker.taskdirs import task_dir_name

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)

DEFAULT_GENERIC_IMAGE = "debian:stable-slim"
API_TIMEOUT_SECONDS = 120


class DockerEngine:
    """``engine: docker`` — see the module docstring."""

    name = "docker"

    def __init__(self) -> None:
        self._config: WorkerConfig | None = None
        self._client: docker.DockerClient | None = None
        self._stream_client: docker.DockerClient | None = None
        self._images: ImageStore | None = None
        self._caches: CacheStore | None = None
        self._purger: PurgePoller | None = None
        self._key: PrivateKey | None = None
        self._live: set[DockerSandbox] = set()

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
        """Connect to dockerd (``ConfigError`` when it does not answer) and set up the stores."""
        self._config = config
        try:
            client = await asyncio.to_thread(docker.from_env, timeout=API_TIMEOUT_SECONDS)
            await asyncio.to_thread(client.ping)
            # Streams (logs, wait, save, load, pull) may be silent for longer than any API timeout.
            self._stream_client = await asyncio.to_thread(docker.from_env, timeout=None)
            self._client = client
        except docker.errors.DockerException as e:
            raise ConfigError(
                f"engine 'docker' needs a running Docker daemon it can reach (DOCKER_HOST or "
                f"/var/run/docker.sock): {e}"
            ) from e
        state_dir, downloads_dir = _host_dirs(config)
        # The one cache store and purge poller of this process, shared with the mounts feature.
        host = await prepare_host_state(config)
        self._caches = host.caches
        self._purger = host.purger
        self._images = ImageStore(self._stream_client, state_dir, downloads_dir)
        if config.openpgpPrivateKeyLocation:
            self._key = await asyncio.to_thread(load_private_key, config.openpgpPrivateKeyLocation)
        await self._remove_leftovers()

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

    async def prepare(self, run: RunContext) -> Sandbox:
        config = self._require_config()
        assert self._client and self._stream_client and self._images and self._caches and self._purger
        payload = run.payload
        secret_env: dict[str, str] = {}
        if run.payload_kind == "docker":
            await check_scopes(
                payload,
                run.task,
                provisioner_id=config.provisionerId,
                worker_type=config.workerType,
                expand=run.expand_scopes,
            )
            options = container_options(
                payload,
                allow_privileged=config.allowPrivileged,
                video_device=config.loopbackVideoDeviceNumber,
            )
            mounts = parse_cache_payload(payload.get("cache") or {})
            if payload.get("encryptedEnv"):
                secret_env = self._decrypt(run)
            spec = ImageSpec.from_payload(payload["image"])
            if mounts:
                await self._purger.poll()
        else:
            options, mounts = ContainerOptions(), {}
            spec = ImageSpec(kind="docker-image", name=config.dockerImage or DEFAULT_GENERIC_IMAGE)

        task_dir = config.tasks_dir / task_dir_name(run.task_id, run.run_id)
        await asyncio.to_thread(task_dir.mkdir, parents=True, exist_ok=True)
        image = await self._images.resolve(spec, run)
        try:
            inspected = await asyncio.to_thread(self._client.api.inspect_image, image.id)
        except docker.errors.APIError as e:
            raise InternalError(f"cannot inspect image {image.ref}: {e}") from e
        workdir = str((inspected.get("Config") or {}).get("WorkingDir") or "/")
        docker_facts = {"imageHash": image.id}
        if image.artifact_hash:
            docker_facts["imageArtifactHash"] = image.artifact_hash
        run.extra["docker"] = docker_facts
        run.log.info(f"Using docker image {image.ref} ({image.id})")

        leases = await self._caches.acquire(mounts, KIND_DOCKER)
        sandbox = DockerSandbox(
            client=self._client,
            stream_client=self._stream_client,
            run=run,
            task_dir=task_dir,
            image=image,
            image_workdir=workdir,
            options=options,
            leases=leases,
            caches=self._caches,
            images=self._images,
            secret_env=secret_env,
            worker_label=self.worker_label,
            on_destroy=self._live.discard,
        )
        self._live.add(sandbox)
        return sandbox

    def _decrypt(self, run: RunContext) -> dict[str, str]:
        if self._key is None:
            raise MalformedPayload(
                "payload.encryptedEnv needs the worker's OpenPGP private key, but this worker has none "
                "(config openpgpPrivateKeyLocation is empty)"
            )
        decrypted = decrypt_env(
            list(run.payload["encryptedEnv"]),
            task_id=run.task_id,
            payload_env=run.payload.get("env") or {},
            key=self._key,
        )
        add_secrets = getattr(run.log, "add_secrets", None)
        if callable(add_secrets):
            add_secrets(list(decrypted.values()))
        run.log.info(f"encryptedEnv: decrypted {', '.join(sorted(decrypted))}")
        return decrypted

    async def garbage_collect(self, required_free_bytes: int) -> None:
        """Evict least recently used images until ``tasksDir``'s file system has enough room."""
        config = self._require_config()
        if self._images is None:
            return
        keep = {s.image.id for s in self._live} | {s.image.ref for s in self._live}
        await self._images.collect_garbage(config.tasks_dir, required_free_bytes, keep)

    async def poll_purge_requests(self) -> int:
        """Apply purge-cache requests now (also done before each task with caches, and every 5 min)."""
        return 0 if self._purger is None else await self._purger.poll()

    @property
    def caches(self) -> CacheStore | None:
        return self._caches

    async def shutdown(self) -> None:
        if self._config is not None:
            await shutdown_host_state(self._config)
        for client in (self._client, self._stream_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(client.close)


def _host_dirs(config: WorkerConfig) -> tuple[Path, Path]:
    """(engine state dir ``<cachesDir>/docker-worker``, downloads dir), both absolute."""
    return Path(os.path.abspath(config.cachesDir)) / "docker-worker", Path(
        os.path.abspath(config.downloadsDir)
    )
