"""``DockerSandbox``: one run's containers — create, stream, kill, copy artifacts out, remove.

Every ``execute`` is one container (``docker run`` style): docker-worker payloads run their single
command; generic-worker payloads run each command in a fresh container of the pool's image with
the task directory bind-mounted at the same path. One container per command (rather than one
long-lived container plus ``docker exec``) is chosen because a container can be killed as a whole
— an exec'd process tree cannot — and it matches D2G's ``docker run``. Containers stay (stopped)
until ``destroy`` so artifacts are copied out of the last one with ``get_archive``; ``destroy``
removes them with their anonymous volumes, whatever happened before. docker-worker payloads get a
TTY as in docker-worker; generic-worker payloads get none and run under the one-pipe wrapper
(``onepipe``), so their log holds exactly what the command wrote, in order. Each command's user and
system time come from the run's CPU group (``cputime``). Features configure it through
the explicit ``Sandbox`` methods: ``configure_container`` (capabilities, devices), ``add_mount``
(caches, volume artifacts, mounts), ``save_image`` (dockerSave), ``image_facts`` (provenance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import posixpath
import shutil
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
from tcworker.engines.docker.attach import AttachedOutput
from tcworker.engines.docker.containeropts import SHM_SIZE, ContainerOptions, create_container
from tcworker.engines.docker.cputime import ZERO as ZERO_CPU
from tcworker.engines.docker.cputime import RunCpu
from tcworker.engines.docker.exitwatch import ContainerExit, ExitWatch
from tcworker.engines.docker.images import ResolvedImage
from tcworker.engines.docker.onepipe import ImageCommand, start_failure, wrap
from tcworker.engines.docker.saving import save_container
from tcworker.engines.docker.shell import ContainerKeeper, open_exec_shell
from tcworker.engines.docker.threads import in_own_thread
from tcworker.errors import InternalError

log = logging.getLogger(__name__)

MAX_SYMLINK_HOPS = 16
EXIT_SIGKILLED = 128 + 9  # what Docker reports for a container whose main process got SIGKILL
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
        grace: float = 3.0,
        clean_up: bool = True,
        limits: TaskLimits | None = None,
        one_pipe: ImageCommand | None = None,
        cpu: RunCpu | None = None,
    ) -> None:
        self._client = client
        self._one_pipe = one_pipe  # generic payloads, image with /bin/sh: stderr into stdout's pipe
        self._cpu = cpu
        self._cpu_seen = ZERO_CPU  # the run's CPU group before the next container
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
        self._grace = grace
        self._clean_up = clean_up
        self._generic = run.payload_kind == "generic"
        self._tty = not self._generic
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
            # docker-worker gave its containers a TTY (spec/worker.md §3.5: lines end in \r\n);
            # a generic-worker command writes to pipes, so its log holds exactly its bytes.
            "tty": self._tty,
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
        if self._cpu is not None:
            kwargs["cgroup_parent"] = self._cpu.cgroup_parent
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
        wrapped = None if self._one_pipe is None else wrap(kwargs, self._one_pipe, env)
        if wrapped is not None:
            kwargs = wrapped
        if self._keeper is not None:
            kwargs = await self._keeper.wrap(kwargs, self._client.api, self._image.id)
        try:
            container = await self._create(kwargs)
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
        # Both before the start: no output is missed, and the exit is seen as soon as Docker says it.
        output, exits = await asyncio.gather(
            asyncio.to_thread(
                AttachedOutput.open, self._stream.api, container.id, self._tty, wrapped is not None
            ),
            self._watch_exit(container),
            return_exceptions=True,
        )
        if not isinstance(output, AttachedOutput):
            if isinstance(exits, ExitWatch):
                exits.close()
            self._current = None
            if isinstance(output, docker.errors.APIError):
                return self._not_started(f"cannot attach to the container's output: {_explain(output)}", started)
            raise output
        exit_watch = exits if isinstance(exits, ExitWatch) else None
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.APIError as e:
            output.close()
            if exit_watch is not None:
                exit_watch.close()
            self._current = None
            return self._not_started(f"the container could not be started: {_explain(e)}", started)
        watch = container_limits.PidsWatch()
        watching = self._watch_pids(container, watch)
        try:
            self._running = container
            if self._keeper is not None:  # the exit code may come from the keep-alive wrapper
                self._keeper.arm()
                exit_code = await self._keeper.follow(
                    container, lambda: self._follow_code(container, output, exit_watch, log)
                )
                oom_seen: bool | None = None
            else:
                exit_code, oom_seen = await self._follow(container, output, exit_watch, log)
        finally:
            self._current = self._running = None
            await container_limits.stop(watching, watch)
        self._last_exit = exit_code
        if self._abort_reason is not None:
            await asyncio.gather(*self._kill_tasks, return_exceptions=True)
            return self._aborted(started)
        user_time, system_time = await self._cpu_times()  # also moves the baseline past this container
        not_started = start_failure(exit_code, output.diverted_stderr) if wrapped is not None else None
        if not_started is not None:
            return self._not_started(f"the container could not be started: {not_started}", started)
        return ProcessResult(
            exit_code=exit_code,
            wall_time=time.monotonic() - started,
            user_time=user_time,
            system_time=system_time,
            limit_hits=await self._limit_hits(container, watch, exit_code, oom_seen),
        )

    async def _cpu_times(self) -> tuple[float, float]:
        """The exited container's user and system CPU seconds: what its run's CPU group gained
        since the container before it (``cputime``); (0, 0) when not measured here."""
        if self._cpu is None:
            return 0.0, 0.0
        now = await asyncio.to_thread(self._cpu.read)
        if now is None:
            return 0.0, 0.0
        spent, self._cpu_seen = now.minus(self._cpu_seen), now
        return spent.seconds()

    def _watch_pids(self, container: Any, watch: container_limits.PidsWatch) -> asyncio.Task[None] | None:
        """Start following the running container's ``pids.events`` (``taskMaxProcesses``) in the
        background: the inspect that finds its pid must not hold up the command's own path (for a
        container that has already exited, dockerd answers it only after its clean-up, ≈0.2 s)."""
        if self._limits is None:
            return None
        return asyncio.create_task(self._follow_pids(container, watch))

    async def _follow_pids(self, container: Any, watch: container_limits.PidsWatch) -> None:
        try:
            await asyncio.to_thread(container.reload)
            pid = int(container.attrs["State"]["Pid"])
        except (docker.errors.APIError, KeyError, TypeError, ValueError):
            return
        if pid > 0:
            await watch.follow(pid)

    async def _limit_hits(
        self, container: Any, watch: container_limits.PidsWatch, exit_code: int, oom_seen: bool | None
    ) -> tuple[str, ...]:
        """The limits the exited container hit: Docker's ``OOMKilled`` and the fork count.

        ``oom_seen`` is what the event stream said (``None``: the exit came from ``wait``). An
        inspect would wait for dockerd's clean-up of the container (≈0.2 s), so it is made only
        when the events did not tell, or told no OOM for a SIGKILLed container (137), in case
        the ``oom`` event was late."""
        if self._limits is None:
            return ()
        oom_killed = bool(oom_seen)
        if oom_seen is None or (not oom_seen and exit_code == EXIT_SIGKILLED):
            try:
                await asyncio.to_thread(container.reload)
                oom_killed = bool(container.attrs["State"].get("OOMKilled"))
            except (docker.errors.APIError, KeyError, TypeError):
                pass
        note = container_limits.unseen_pids_note(self._limits, watch, exit_code)
        if note is not None:
            self._run.log.warn(note)
        return container_limits.limit_hits(self._limits, oom_killed, watch)

    async def _create(self, kwargs: dict[str, Any]) -> Any:
        """Create a container in one request; the model is built from its id (no inspect)."""
        container_id = await asyncio.to_thread(create_container, self._client.api, kwargs)
        return self._client.containers.prepare_model({"Id": container_id})

    async def _watch_exit(self, container: Any) -> ExitWatch | None:
        """The container's ``die`` subscription, or ``None`` when Docker refuses it (``wait`` alone
        then tells the exit, a little later)."""
        try:
            return await asyncio.to_thread(ExitWatch.open, self._stream.api, container.id)
        except docker.errors.DockerException as e:
            log.warning("cannot follow the events of container %s (exit code from wait only): %s", container.id, e)
            return None

    async def _follow(
        self, container: Any, output: AttachedOutput, exits: ExitWatch | None, sink: LogSink
    ) -> tuple[int, bool | None]:
        """Stream the container's output to ``sink`` until it exits; return its exit code and
        whether the events reported an OOM kill (``None`` when ``wait`` answered first).

        The exit code is the first of the ``die`` event (``exitwatch``) and ``wait``; the output
        is always read to its end before this returns (secrets are masked once, by the task log).
        """
        loop = asyncio.get_running_loop()
        pumping = asyncio.ensure_future(in_own_thread("docker-output", output.pump, loop, sink))
        waiting = asyncio.ensure_future(in_own_thread("docker-wait", self._stream.api.wait, container.id))
        dying = asyncio.ensure_future(in_own_thread("docker-die", exits.wait_exit)) if exits else None
        for pending in (waiting, dying):
            if pending is not None:  # whichever loses the race is never awaited
                pending.add_done_callback(_consume_outcome)
        try:
            return await self._first_exit(waiting, dying)
        except asyncio.CancelledError:
            # Kill first: the output stream (awaited below) only ends when the container does.
            await asyncio.shield(self._kill(container))
            raise
        finally:
            if exits is not None:
                exits.close()
            try:
                await pumping
            except (OSError, docker.errors.DockerException) as e:
                log.warning("output stream of container %s ended with an error: %s", container.id, e)

    async def _follow_code(
        self, container: Any, output: AttachedOutput, exits: ExitWatch | None, sink: LogSink
    ) -> int:
        """``_follow``'s exit code alone (what the interactive keep-alive waits on)."""
        code, _ = await self._follow(container, output, exits, sink)
        return code

    async def _first_exit(
        self, waiting: asyncio.Future[Any], dying: asyncio.Future[ContainerExit] | None
    ) -> tuple[int, bool | None]:
        if dying is not None:
            await asyncio.wait({waiting, dying}, return_when=asyncio.FIRST_COMPLETED)
            if dying.done() and dying.exception() is None:
                ended = dying.result()
                return ended.code, ended.oom_killed
        status = await waiting
        error = (status.get("Error") or {}).get("Message") if isinstance(status.get("Error"), dict) else None
        if error:
            self._run.log.warn(f"Docker reported for the container: {error}")
        return int(status.get("StatusCode", -1)), None

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
            self._kill_tasks.append(self._loop.create_task(self._stop(container, reason)))
        else:  # called from another thread (a signal handler thread, a timer): hop onto the loop
            self._loop.call_soon_threadsafe(
                lambda: self._kill_tasks.append(asyncio.ensure_future(self._stop(container, reason)))
            )

    async def _stop(self, container: Any, reason: CancelReason) -> None:
        """Interrupt → grace → kill, as the host engines do (``docker stop``: the image's stop
        signal, SIGTERM by default, then SIGKILL after the grace); max run time kills at once."""
        if reason is CancelReason.MAX_RUN_TIME or self._grace <= 0:
            await self._kill(container)
            return
        try:
            # Docker takes whole seconds; its HTTP call lasts up to the grace, in a worker thread.
            await asyncio.to_thread(container.stop, timeout=max(1, math.ceil(self._grace)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            await self._kill(container)

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
        container = await self._create(self._create_kwargs(["true"], {}))
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
        target = full = self._container_path(path)
        container = await self._reader()
        for _ in range(MAX_SYMLINK_HOPS):
            try:
                chunks, stat = await asyncio.to_thread(self._stream.api.get_archive, container.id, target)
            except docker.errors.NotFound as e:
                if self._generic:  # generic-worker's wording
                    raise ArtifactMissing(f"Could not read {kind} '{full}'") from e
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
            if self._generic and {found, kind} == {"file", "directory"}:  # generic-worker's wording
                raise ArtifactInvalid(
                    f"{kind.capitalize()} artifact '{full}' exists as a {found}, not a {kind}, on the worker"
                )
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
                archive.extract,
                chunks,
                kind,
                dest,
                warn=warn,
                max_file_bytes=max_file_bytes,
                keep_symlinks=self._generic,
            )
        except OSError as e:
            raise ArtifactInvalid(f"cannot unpack {path!r} from the container: {e}") from e
        except ArtifactInvalid:
            raise
        except Exception as e:  # tarfile.TarError, docker stream errors
            raise ArtifactInvalid(f"cannot unpack {path!r} from the container: {e}") from e
        if not result.symlinks:
            return result.files
        files = list(result.files)
        for rel, link in result.symlinks:
            linked = await self._linked_file(container, target, rel, link, dest, staging, max_file_bytes)
            if linked is not None:
                files.append(linked)
        return sorted(files, key=lambda f: f.relative_name)

    async def _linked_file(
        self,
        container: Any,
        directory: str,
        rel: str,
        link: str,
        dest: Path,
        staging: Path,
        max_file_bytes: int | None,
    ) -> ArtifactFile | None:
        """A symbolic link inside a generic payload's directory artifact, as the host engines
        treat it: a link to a regular file in the task directory is uploaded with that file's
        content; links to directories (not followed) and dangling links are skipped; a link to a
        file outside the task directory refuses the whole artifact."""
        where = posixpath.normpath(posixpath.join(directory, posixpath.dirname(rel), link))
        for _ in range(MAX_SYMLINK_HOPS):
            try:
                chunks, stat = await asyncio.to_thread(self._stream.api.get_archive, container.id, where)
            except docker.errors.NotFound:
                self._run.log.warn(f"skipping {rel!r} in directory artifact: a dangling symbolic link")
                return None
            except docker.errors.APIError as e:
                raise ArtifactInvalid(f"cannot read {where} from the container: {_explain(e)}") from e
            found = archive.stat_kind(stat)
            if found != "symlink":
                break
            chunks.close()
            where = posixpath.normpath(str(stat.get("linkTarget") or ""))
        else:
            raise ArtifactInvalid(f"too many levels of symbolic links at {rel!r}")
        if found != "file":
            chunks.close()
            self._run.log.warn(f"skipping {rel!r} in directory artifact: a symbolic link to a {found}")
            return None
        try:
            self._check_in_task_dir(where, rel)
        except ArtifactInvalid:
            chunks.close()
            raise
        scratch = await asyncio.to_thread(_fresh_dir, staging, "docker-link-")
        final = dest.joinpath(*rel.split("/"))
        try:
            copied = await asyncio.to_thread(
                archive.extract, chunks, "file", scratch, max_file_bytes=max_file_bytes
            )
            if copied.files[0].oversize:  # sized from the tar header, never written
                await asyncio.to_thread(scratch.rmdir)
                return ArtifactFile(relative_name=rel, path=final, size=copied.files[0].size, oversize=True)
            await asyncio.to_thread(_move_into_place, copied.files[0].path, final)
        except ArtifactInvalid:
            raise
        except Exception as e:  # OSError, tarfile.TarError, docker stream errors
            raise ArtifactInvalid(f"cannot unpack {rel!r} (a link to {where}) from the container: {e}") from e
        return ArtifactFile(relative_name=rel, path=final, size=copied.files[0].size)

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
        """Remove every container (and its anonymous volumes), then the task directory (unless
        ``cleanUpTaskDirs`` is off); idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self._keeper is not None:
                with contextlib.suppress(OSError):
                    await self._keeper.close()
            await self._remove_everything()
            if self._cpu is not None:
                await asyncio.to_thread(self._cpu.remove)
        finally:
            if self._clean_up:
                await asyncio.to_thread(shutil.rmtree, self._task_dir, True)
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


def _move_into_place(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)
    source.parent.rmdir()


def _fresh_dir(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's exception so asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _explain(e: BaseException) -> str:
    return str(getattr(e, "explanation", None) or e)
