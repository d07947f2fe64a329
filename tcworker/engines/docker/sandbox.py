"""``DockerSandbox``: one run's containers — create, stream, kill, copy artifacts out, remove.

Every ``execute`` is one container (``docker run`` style): docker-worker payloads run their single
command; generic-worker payloads run each command in a fresh container of the pool's image with
the task directory bind-mounted at the same path. One container per command (rather than one
long-lived container plus ``docker exec``) is chosen because a container can be killed as a whole
— an exec'd process tree cannot — and it matches D2G's ``docker run``. Containers stay (stopped)
until ``destroy`` so artifacts are copied out of the last one with ``get_archive``; ``destroy``
removes them with their anonymous volumes, whatever happened before. Features configure it through
the explicit ``Sandbox`` methods: ``configure_container`` (capabilities, devices), ``add_mount``
(caches, volume artifacts, mounts), ``save_image`` (dockerSave), ``image_facts`` (provenance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from tcworker.engines.base import (
    EXIT_ABORTED,
    EXIT_NOT_STARTED,
    ArtifactFile,
    ArtifactInvalid,
    ArtifactMissing,
    CancelReason,
    LogSink,
    Mount,
    ProcessResult,
    RunContext,
    Sandbox,
    ShellChannel,
    TaskNetwork,
    Unsupported,
)
from tcworker.engines.cgroups import TaskLimits
from tcworker.engines.docker import archive
from tcworker.engines.docker import limits as container_limits
from tcworker.engines.docker.containeropts import SHM_SIZE, ContainerOptions
from tcworker.engines.docker.images import ResolvedImage
from tcworker.engines.docker.saving import save_container
from tcworker.engines.docker.shell import ContainerKeeper, open_exec_shell
from tcworker.errors import InternalError

log = logging.getLogger(__name__)

MAX_SYMLINK_HOPS = 16
SHELL_WAIT = 20.0  # seconds an interactive shell waits for a container of the task to run
LABEL_WORKER = "tcworker.worker"
LABEL_RUN = "tcworker.run"


class DockerSandbox(Sandbox):
    """Everything one run owns in Docker. Made by ``DockerEngine.prepare``."""

    def __init__(
        self,
        *,
        client: docker.DockerClient,
        stream_client: docker.DockerClient,
        run: RunContext,
        task_dir: Path,
        image: ResolvedImage,
        image_workdir: str,
        worker_label: str,
        on_destroy: Callable[[DockerSandbox], None] | None = None,
        limits: TaskLimits | None = None,
    ) -> None:
        self._client = client
        self._limits = limits
        self._stream = stream_client
        self._run = run
        self._task_dir = task_dir
        self._image = image
        self._image_workdir = image_workdir or "/"
        self._opts = ContainerOptions()
        self._mounts: list[Mount] = []
        self._worker_label = worker_label
        self._on_destroy = on_destroy
        self._generic = run.payload_kind == "generic"
        self._containers: list[Any] = []
        self._current: Any = None
        self._running: Any = None  # _current once started: what interactive shells can enter
        self._abort_reason: CancelReason | None = None
        self._kill_tasks: list[asyncio.Task[None]] = []
        self._last_exit: int | None = None
        self._committed: str | None = None
        self._destroyed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._network: TaskNetwork | None = None
        self._network_obj: Any = None
        self._extra_hosts: dict[str, str] = {"localhost.localdomain": "127.0.0.1"}
        self._keeper: ContainerKeeper | None = None  # features.interactive (docker-worker payloads)

    # -- Sandbox protocol: facts ---------------------------------------------------------------

    @property
    def task_dir(self) -> Path:
        return self._task_dir

    @property
    def workdir_in_task(self) -> str:
        return str(self._task_dir) if self._generic else self._image_workdir

    @property
    def image(self) -> ResolvedImage:
        return self._image

    @property
    def container_ids(self) -> list[str]:
        return [str(c.id) for c in self._containers]

    def base_env(self) -> dict[str, str]:
        """Nothing: the image's own ``Env`` (PATH, HOME …) is the container's default environment."""
        return {}

    def image_facts(self) -> dict[str, str]:
        facts = {"imageHash": self._image.id}
        if self._image.artifact_hash:
            facts["imageArtifactHash"] = self._image.artifact_hash
        return facts

    # -- what features configure -----------------------------------------------------------------

    def configure_container(self, options: ContainerOptions) -> None:
        self._opts = options

    def add_mount(self, mount: Mount) -> None:
        self._mounts.append(mount)

    async def task_user_can_read(self, path: str) -> bool:
        """The container sees no host file but its bind mounts."""
        return any(path == str(m.host_path) or path.startswith(f"{m.host_path}/") for m in self._mounts)

    # -- running ---------------------------------------------------------------------------------

    def _binds(self) -> dict[str, dict[str, str]]:
        binds = dict(self._opts.binds)
        for mount in self._mounts:
            binds[str(mount.host_path)] = {"bind": mount.task_path, "mode": "ro" if mount.read_only else "rw"}
        if self._generic:
            binds[str(self._task_dir)] = {"bind": str(self._task_dir), "mode": "rw"}
        return binds

    def _create_kwargs(self, argv: Sequence[str] | None, env: Mapping[str, str]) -> dict[str, Any]:
        n = len(self._containers)
        kwargs: dict[str, Any] = {
            "image": self._image.id,
            "command": list(argv) if argv else None,
            "environment": [f"{k}={v}" for k, v in env.items()],
            "name": f"tcworker-{self._run.task_id}-{self._run.run_id}-{n}-{uuid.uuid4().hex[:6]}",
            "labels": {
                LABEL_WORKER: self._worker_label,
                LABEL_RUN: f"{self._run.task_id}/{self._run.run_id}",
            },
            "tty": True,
            "stdin_open": False,
            "volumes": self._binds(),
            "extra_hosts": dict(self._extra_hosts),
            "shm_size": SHM_SIZE,
            "log_config": LogConfig(type=LogConfig.types.JSON),
            **self._opts.create_kwargs(),
        }
        if self._limits is not None:
            kwargs.update(container_limits.create_kwargs(self._limits))
        if self._generic:
            kwargs["working_dir"] = str(self._task_dir)
        if self._network is not None:
            kwargs["network"] = self._network.name
        return kwargs

    # -- the run's own network (NetworkedSandbox) ------------------------------------------------

    async def join_task_network(self) -> TaskNetwork:
        """Create this run's bridge network (once); containers created from now on join it.

        Named ``tcworker-task-<taskId>-<runId>`` and labelled like the containers, so a crashed
        worker's leftovers are found; removed in ``destroy`` after the containers.
        """
        if self._network is not None:
            return self._network
        if self._destroyed:
            raise InternalError("join_task_network() called on a destroyed docker sandbox")
        name = task_network_name(self._run.task_id, self._run.run_id)
        labels = {LABEL_WORKER: self._worker_label, LABEL_RUN: f"{self._run.task_id}/{self._run.run_id}"}
        try:
            network = await asyncio.to_thread(
                self._client.networks.create, name, driver="bridge", labels=labels, check_duplicate=True
            )
            self._network_obj = network
            await asyncio.to_thread(network.reload)
            config = (network.attrs.get("IPAM") or {}).get("Config") or []
            ipv4 = next((c for c in config if "." in str(c.get("Subnet", ""))), None)
            if ipv4 is None or not ipv4.get("Gateway"):
                raise InternalError(f"docker network {name} has no IPv4 gateway: {config}")
        except docker.errors.APIError as e:
            raise InternalError(f"cannot create the task's docker network {name}: {_explain(e)}") from e
        self._network = TaskNetwork(name=name, gateway=str(ipv4["Gateway"]), subnet=str(ipv4["Subnet"]))
        return self._network

    def add_host(self, name: str, address: str) -> None:
        """``/etc/hosts`` entry ``address name`` in every container created from now on."""
        self._extra_hosts[name] = address

    async def execute(self, argv: Sequence[str], env: Mapping[str, str], log: LogSink) -> ProcessResult:
        """Run ``argv`` (``[]`` = the image's default command) in a new container."""
        if self._destroyed:
            raise InternalError("execute() called on a destroyed docker sandbox")
        started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        if self._abort_reason is not None:
            return self._aborted(started)
        kwargs = self._create_kwargs(argv, env)
        if self._keeper is not None:
            kwargs = await self._keeper.wrap(kwargs, self._client.api, self._image.id)
        try:
            container = await asyncio.to_thread(self._client.containers.create, **kwargs)
        except docker.errors.ImageNotFound as e:
            raise InternalError(
                f"image {self._image.ref} ({self._image.id}) vanished before the task ran"
            ) from e
        except docker.errors.APIError as e:
            return self._not_started(f"the container could not be created: {_explain(e)}", started)
        self._containers.append(container)
        self._current = container
        if self._abort_reason is not None:
            return self._aborted(started)
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.APIError as e:
            self._current = None
            return self._not_started(f"the container could not be started: {_explain(e)}", started)
        watch = container_limits.PidsWatch()
        watching = await self._watch_pids(container, watch)
        try:
            self._running = container
            if self._keeper is not None:
                self._keeper.arm()
                exit_code = await self._keeper.follow(container, lambda: self._follow(container, log))
            else:
                exit_code = await self._follow(container, log)
        finally:
            self._current = self._running = None
            await container_limits.stop(watching, watch)
        self._last_exit = exit_code
        if self._abort_reason is not None:
            await asyncio.gather(*self._kill_tasks, return_exceptions=True)
            return self._aborted(started)
        return ProcessResult(
            exit_code=exit_code,
            wall_time=time.monotonic() - started,
            limit_hits=await self._limit_hits(container, watch, exit_code),
        )

    async def _watch_pids(self, container: Any, watch: container_limits.PidsWatch) -> asyncio.Task[None] | None:
        """Start following the running container's ``pids.events`` (``taskMaxProcesses``)."""
        if self._limits is None:
            return None
        try:
            await asyncio.to_thread(container.reload)
            pid = int(container.attrs["State"]["Pid"])
        except (docker.errors.APIError, KeyError, TypeError, ValueError):
            return None
        return asyncio.create_task(watch.follow(pid)) if pid > 0 else None

    async def _limit_hits(self, container: Any, watch: container_limits.PidsWatch, exit_code: int) -> tuple[str, ...]:
        """The limits the exited container hit: Docker's ``OOMKilled`` and the fork count."""
        if self._limits is None:
            return ()
        oom_killed = False
        try:
            await asyncio.to_thread(container.reload)
            oom_killed = bool(container.attrs["State"].get("OOMKilled"))
        except (docker.errors.APIError, KeyError, TypeError):
            pass
        note = container_limits.unseen_pids_note(self._limits, watch, exit_code)
        if note is not None:
            self._run.log.warn(note)
        return container_limits.limit_hits(self._limits, oom_killed, watch)

    async def _follow(self, container: Any, sink: LogSink) -> int:
        """Stream the container's output to ``sink`` until it exits; return its exit code."""
        loop = asyncio.get_running_loop()
        api = self._stream.api

        def pump() -> None:  # secrets are masked once, by the task log
            for chunk in api.logs(container.id, stream=True, follow=True):
                if chunk:
                    loop.call_soon_threadsafe(sink.write, chunk)

        pumping = asyncio.ensure_future(asyncio.to_thread(pump))
        try:
            status = await asyncio.to_thread(api.wait, container.id)
        except asyncio.CancelledError:
            # Kill first: the log stream (awaited below) only ends when the container does.
            await asyncio.shield(self._kill(container))
            raise
        finally:
            try:
                await pumping
            except docker.errors.DockerException as e:
                log.warning("log stream of container %s ended with an error: %s", container.id, e)
        error = (status.get("Error") or {}).get("Message") if isinstance(status.get("Error"), dict) else None
        if error:
            self._run.log.warn(f"Docker reported for the container: {error}")
        return int(status.get("StatusCode", -1))

    def memory_usage_bytes(self) -> int | None:
        """The running container's memory as ``docker stats`` shows it: cgroup usage minus the
        inactive page cache (one-shot stats, no second sample to wait for). Blocking: callers run
        it in a thread. ``None`` between containers or when Docker has no figure."""
        container = self._current
        if container is None:
            return None
        try:
            stats = self._client.api.stats(container.id, stream=False, one_shot=True)
        except docker.errors.DockerException:
            return None
        return container_memory_bytes(stats)

    def _not_started(self, message: str, started: float) -> ProcessResult:
        self._run.log.error(message)
        self._last_exit = EXIT_NOT_STARTED
        return ProcessResult(
            exit_code=EXIT_NOT_STARTED, start_error=message, wall_time=time.monotonic() - started
        )

    def _aborted(self, started: float) -> ProcessResult:
        self._last_exit = EXIT_ABORTED
        return ProcessResult(
            exit_code=EXIT_ABORTED,
            signal=9,
            cancel_reason=self._abort_reason,
            wall_time=time.monotonic() - started,
        )

    def abort(self, reason: CancelReason) -> None:
        """Record ``reason`` (the first one wins) and kill the running container, if any."""
        if self._abort_reason is not None:
            return
        self._abort_reason = reason
        if reason is CancelReason.MAX_RUN_TIME:
            self._run.log.error(
                f"Task timeout after {self._run.payload.get('maxRunTime')} seconds. Force killing container."
            )
        container = self._current
        if container is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._kill_tasks.append(self._loop.create_task(self._kill(container)))
        else:  # called from another thread (a signal handler thread, a timer): hop onto the loop
            self._loop.call_soon_threadsafe(
                lambda: self._kill_tasks.append(asyncio.ensure_future(self._kill(container)))
            )

    async def _kill(self, container: Any) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            await asyncio.to_thread(container.kill)

    # -- interactive shells (tcworker/engines/docker/shell.py) ----------------------------------

    async def open_shell(self, env: Mapping[str, str]) -> ShellChannel:
        """``docker exec`` a shell into the running (or kept) container of the task, waiting up to
        ``SHELL_WAIT`` s for one: the shell is published before the first container starts, and
        a generic-worker payload has none between two commands."""
        deadline = time.monotonic() + SHELL_WAIT
        while True:
            container = self._running
            if container is None and self._keeper is not None:
                container = self._keeper.container
            if container is not None and not self._destroyed:
                return await open_exec_shell(self._client.api, str(container.id), self.workdir_in_task, env)
            if self._destroyed or time.monotonic() >= deadline:
                raise Unsupported("no container of the task is running right now")
            await asyncio.sleep(0.1)

    def keep_container_after_command(self) -> None:
        if self._generic:
            raise Unsupported("generic-worker payloads run one container per command: none is kept")
        if self._keeper is None:
            self._keeper = ContainerKeeper.create(self._task_dir)
            self.add_mount(self._keeper.mount())

    async def release_container(self) -> None:
        if self._keeper is not None:
            await self._keeper.release()

    # -- artifacts -------------------------------------------------------------------------------

    def _container_path(self, path: str) -> str:
        if self._generic:
            full = posixpath.normpath(posixpath.join(str(self._task_dir), path))
            self._check_in_task_dir(full, path)
            return full
        return posixpath.normpath(posixpath.join(self._image_workdir, path))

    def _check_in_task_dir(self, full: str, requested: str) -> None:
        root = str(self._task_dir)
        if full != root and not full.startswith(root.rstrip("/") + "/"):
            raise ArtifactInvalid(
                f"artifact path {requested!r} resolves to {full!r}, outside the task directory"
            )

    async def _reader(self) -> Any:
        """The container to copy artifacts from: the last one run, or a never-started one."""
        if self._containers:
            return self._containers[-1]
        container = await asyncio.to_thread(
            self._client.containers.create, **self._create_kwargs(["true"], {})
        )
        self._containers.append(container)
        return container

    async def collect_artifact(
        self, path: str, kind: str, staging: Path, max_file_bytes: int | None = None
    ) -> list[ArtifactFile]:
        """Copy ``path`` (absolute in the container; generic payloads: relative to the task dir)
        out of the stopped container into ``staging``. Symlinks are followed inside the container
        (never on the host); generic payloads must stay within the task directory.

        Size limit: a ``file`` over ``max_file_bytes`` is decided from the path stat Docker sends
        with the archive's headers, and the stream is dropped before its content is read; inside a
        ``directory`` each member is decided from its tar header and its content is skipped in the
        stream (read and dropped by tarfile, never written)."""
        if kind == "volume":  # D2G's artifact type: a directory that was a volume in the container
            kind = "directory"
        target = self._container_path(path)
        container = await self._reader()
        for _ in range(MAX_SYMLINK_HOPS):
            try:
                chunks, stat = await asyncio.to_thread(self._stream.api.get_archive, container.id, target)
            except docker.errors.NotFound as e:
                raise ArtifactMissing(f"no such file or directory in the container: {target}") from e
            except docker.errors.APIError as e:
                raise ArtifactInvalid(f"cannot read {target} from the container: {_explain(e)}") from e
            found = archive.stat_kind(stat)
            if found != "symlink":
                break
            chunks.close()
            target = posixpath.normpath(str(stat.get("linkTarget") or ""))
            if self._generic:
                self._check_in_task_dir(target, path)
        else:
            raise ArtifactInvalid(f"too many levels of symbolic links at {path!r}")
        if found != kind:
            chunks.close()
            what = "something that is neither file nor directory" if found == "other" else f"a {found}"
            raise ArtifactInvalid(f"{path!r} is {what} in the container, not a {kind}")
        dest = await asyncio.to_thread(_fresh_dir, staging, "docker-artifact-")
        size = stat.get("size")
        if kind == "file" and max_file_bytes is not None and isinstance(size, int) and size > max_file_bytes:
            chunks.close()  # not one byte of the content is read
            return [ArtifactFile(relative_name="", path=dest / "file", size=size, oversize=True)]
        loop = asyncio.get_running_loop()

        def warn(message: str) -> None:
            loop.call_soon_threadsafe(self._run.log.warn, message)

        try:
            result = await asyncio.to_thread(
                archive.extract, chunks, kind, dest, warn=warn, max_file_bytes=max_file_bytes
            )
        except OSError as e:
            raise ArtifactInvalid(f"cannot unpack {path!r} from the container: {e}") from e
        except ArtifactInvalid:
            raise
        except Exception as e:  # tarfile.TarError, docker stream errors
            raise ArtifactInvalid(f"cannot unpack {path!r} from the container: {e}") from e
        return result.files

    async def save_image(self, dest: Path) -> ArtifactFile | None:
        """``dockerSave``: the last container committed as ``task-<taskId>-<runId>:latest`` and saved."""
        if not self._containers:
            return None
        repo = docker_save_repository(self._run.task_id, self._run.run_id)
        self._run.log.info(f"dockerSave: committing the container as {repo}:latest")
        self._committed = f"{repo}:latest"
        return await save_container(self._stream, self._containers[-1], repo, dest)

    # -- clean-up ------------------------------------------------------------------------------

    async def destroy(self) -> None:
        """Remove every container (and its anonymous volumes) and return the caches; idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self._keeper is not None:
                with contextlib.suppress(OSError):
                    await self._keeper.close()
            await self._remove_everything()
        finally:
            if self._on_destroy is not None:
                self._on_destroy(self)

    async def _remove_everything(self) -> None:
        problems: list[str] = []
        for container in self._containers:
            try:
                await asyncio.to_thread(container.remove, v=True, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                problems.append(f"container {container.id}: {_explain(e)}")
        if self._committed is not None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                await asyncio.to_thread(self._client.images.remove, self._committed, force=True)
        if self._network_obj is not None:
            try:
                await asyncio.to_thread(self._network_obj.remove)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                problems.append(f"network {self._network_obj.name}: {_explain(e)}")
        if problems:
            raise InternalError("could not remove the task's containers: " + "; ".join(problems))


def container_memory_bytes(stats: Mapping[str, Any]) -> int | None:
    """Memory in use from a container stats document (the docker CLI's rule: ``usage`` minus
    ``total_inactive_file`` on cgroup v1, ``inactive_file`` on v2), or ``None`` when absent."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int):
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    if isinstance(inactive, int) and inactive < usage:
        return usage - inactive
    return usage


def task_network_name(task_id: str, run_id: int) -> str:
    """The run's own docker network (generic-worker names its ``gw-task-<taskId[:12]>-<runId>``)."""
    return f"tcworker-task-{task_id}-{run_id}"


def docker_save_repository(task_id: str, run_id: int) -> str:
    """``task-<taskId>-<runId>`` made a valid Docker repository name (lower case, ``_`` → ``-``)."""
    return f"task-{task_id.lower().replace('_', '-')}-{run_id}"


def _fresh_dir(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _explain(e: BaseException) -> str:
    return str(getattr(e, "explanation", None) or e)
