"""Interactive shells in the docker engine's containers: ``docker exec`` shells and docker-worker's
keep-alive (``features.interactive``).

``open_exec_shell`` starts ``bash`` (else ``sh``) by ``docker exec`` with a TTY in a running
container, as the container's user (the task's), in the task's working directory, with the
task's environment; the hijacked exec connection is driven by the event loop (non-blocking
socket), resizes go through the exec resize API, and closing kills every process of the exec's
terminal session on the host (an exec'd process tree outlives a closed connection otherwise).

``ContainerKeeper`` is docker-worker's "keep the container alive while someone is connected":
when a container's main process exits, Docker stops the container and every exec in it, so a
shell cannot outlive the command unless the command is not the container's main process. The
keeper therefore starts the command under a small ``/bin/sh`` wrapper (the image's entrypoint
and command as its arguments) that reports the command's exit status through a FIFO in a
bind-mounted worker directory and then blocks on a second FIFO that nobody ever writes, so
``execute`` learns the exit code when the command ends while the container stays up until
``release`` kills it. docker-worker did the same with its ``/.taskclusterutils`` helpers and
a lock file. Images without ``/bin/sh`` run unwrapped (no shell could start in them anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil

from tcworker.engines.base import Mount, Unsupported
from tcworker.engines.docker.onepipe import image_has_sh

log = logging.getLogger(__name__)

READ_SIZE = 4096
KEEPER_DIR_IN_CONTAINER = "/.tcworker-interactive"
STATUS_FIFO = "status"
HOLD_FIFO = "hold"
# $0 is a label; "$@" is the image's entrypoint + the task's command. The status goes to a FIFO
# the worker holds open; reading the never-written hold FIFO blocks (its open waits for a
# writer that never comes), so the container lives until the worker kills it. The wait is a
# loop: as PID 1 the wrapper inherits every orphan of the shells, and a child's SIGCHLD
# interrupts the blocking open (EINTR), which would otherwise end the wrapper and the container.
WRAPPER = (
    '"$@"; status=$?; '
    f"echo $status > {KEEPER_DIR_IN_CONTAINER}/{STATUS_FIFO}; "
    f"while :; do read _ < {KEEPER_DIR_IN_CONTAINER}/{HOLD_FIFO} || sleep 1; done 2>/dev/null"
)
# bash when the image has it, else the POSIX sh every image with a shell has.
PICK_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"


class DockerExecShell:
    """One ``docker exec`` shell (a ``ShellChannel``) bridged through its hijacked connection."""

    def __init__(self, api: docker.APIClient, exec_id: str, sock: socket.socket, pending: bytes) -> None:
        self._api = api
        self._exec_id = exec_id
        self._sock = sock
        self._pending = pending  # bytes the HTTP layer had read past the upgrade response
        self._closed = False

    async def read(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._closed:
            return b""
        try:
            return await asyncio.get_running_loop().sock_recv(self._sock, READ_SIZE)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendall(self._sock, data)

    async def resize(self, columns: int, rows: int) -> None:
        with contextlib.suppress(docker.errors.APIError):
            await asyncio.to_thread(self._api.exec_resize, self._exec_id, height=rows, width=columns)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(docker.errors.APIError):
            info = await asyncio.to_thread(self._api.exec_inspect, self._exec_id)
            pid = int(info.get("Pid") or 0)  # the exec's process as the host sees it
            container = await asyncio.to_thread(self._api.inspect_container, str(info.get("ContainerID")))
            container_pid = int((container.get("State") or {}).get("Pid") or 0)
            if pid > 0 and container_pid > 0:
                await asyncio.to_thread(kill_exec_session, pid, container_pid)
        with contextlib.suppress(OSError):
            self._sock.close()


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def kill_exec_session(sid: int, container_pid: int) -> None:
    """SIGKILL every process of the exec's terminal session (runc makes a TTY exec a session
    leader, so ``sid`` is its host pid): its background jobs outlive the shell otherwise,
    re-parented to the container's init. Only processes in the container's pid namespace are
    touched, so a host pid reused after the shell ended can never hit anything else."""
    namespace = _pid_namespace(container_pid)
    if namespace is None:
        return  # the container is gone, and every process of it with it
    doomed: list[psutil.Process] = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getsid(proc.pid) == sid and _pid_namespace(proc.pid) == namespace:
                doomed.append(proc)
    for proc in doomed:
        with contextlib.suppress(psutil.Error):
            proc.kill()


async def open_exec_shell(
    api: docker.APIClient, container_id: str, workdir: str, env: Mapping[str, str]
) -> DockerExecShell:
    """``docker exec -it`` a shell into ``container_id``; ``Unsupported`` when it cannot start."""
    environment = {"TERM": "xterm-256color", **env}
    try:
        created = await asyncio.to_thread(
            api.exec_create,
            container_id,
            ["/bin/sh", "-c", PICK_SHELL],
            stdin=True,
            tty=True,
            environment=[f"{k}={v}" for k, v in environment.items()],
            workdir=workdir or None,
        )
        exec_id = str(created["Id"])
        hijacked = await asyncio.to_thread(api.exec_start, exec_id, tty=True, socket=True)
    except docker.errors.APIError as e:
        raise Unsupported(f"docker exec failed: {e.explanation or e}") from e
    sock, pending = _raw_socket(hijacked)
    return DockerExecShell(api, exec_id, sock, pending)


def _raw_socket(hijacked: Any) -> tuple[socket.socket, bytes]:
    """The plain socket under docker-py's hijacked connection (made non-blocking for the loop),
    plus whatever its HTTP reader had already buffered past the upgrade response."""
    sock: socket.socket = getattr(hijacked, "_sock", hijacked)
    sock.setblocking(False)
    pending = b""
    response = getattr(hijacked, "_response", None)
    with contextlib.suppress(AttributeError, OSError, ValueError):
        reader = response.raw._fp.fp  # type: ignore[union-attr]
        buffered = reader.peek()  # non-blocking now: only what is already buffered
        if buffered:
            pending = reader.read(len(buffered))
    return sock, pending


class ContainerKeeper:
    """Keeps a docker-worker payload's container up after its command (see the module docstring)."""

    def __init__(self, host_dir: Path) -> None:
        self.host_dir = host_dir
        self.container: Any = None  # the container kept after its command exited
        self._status_fd = -1
        self._following: asyncio.Future[int] | None = None
        self._status: asyncio.Future[int] | None = None
        self._buffer = b""

    @classmethod
    def create(cls, task_dir: Path) -> ContainerKeeper:
        host_dir = task_dir / ".tcworker-interactive"
        host_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        host_dir.chmod(0o755)  # the container's user (any uid) must reach the FIFOs
        for name, mode in ((STATUS_FIFO, 0o622), (HOLD_FIFO, 0o644)):
            path = host_dir / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path)
            path.chmod(mode)
        return cls(host_dir)

    def mount(self) -> Mount:
        return Mount(self.host_dir, KEEPER_DIR_IN_CONTAINER, read_only=False)

    async def wrap(self, kwargs: dict[str, Any], api: docker.APIClient, image_id: str) -> dict[str, Any]:
        """``containers.create`` arguments that run the same argv under the wrapper (unchanged
        when the image has no ``/bin/sh`` or nothing to run)."""
        try:
            config = (await asyncio.to_thread(api.inspect_image, image_id)).get("Config") or {}
        except docker.errors.APIError:
            return kwargs
        entrypoint = list(config.get("Entrypoint") or [])
        command = list(kwargs.get("command") or config.get("Cmd") or [])
        if not entrypoint + command or not await image_has_sh(api, image_id, kwargs.get("labels") or {}):
            return kwargs
        return {
            **kwargs,
            "entrypoint": ["/bin/sh", "-c", WRAPPER, "tcworker-interactive"],
            "command": entrypoint + command,
        }

    def arm(self) -> None:
        """Listen on the status FIFO (opened read-write so that it neither blocks nor sees EOF)."""
        loop = asyncio.get_running_loop()
        self._status = loop.create_future()
        self._buffer = b""
        if self._status_fd < 0:
            self._status_fd = os.open(self.host_dir / STATUS_FIFO, os.O_RDWR | os.O_NONBLOCK)
            if not stat.S_ISFIFO(os.fstat(self._status_fd).st_mode):
                raise OSError(errno.EINVAL, "the interactive status file is not a FIFO")
        loop.add_reader(self._status_fd, self._on_status)

    def _on_status(self) -> None:
        try:
            self._buffer += os.read(self._status_fd, 64)
        except BlockingIOError:
            return
        if b"\n" not in self._buffer or self._status is None or self._status.done():
            return
        line = self._buffer.split(b"\n", 1)[0].strip()
        self._status.set_result(int(line) if line.isdigit() else -1)
        asyncio.get_running_loop().remove_reader(self._status_fd)

    async def follow(self, container: Any, following: Callable[[], Awaitable[int]]) -> int:
        """The command's exit code: from the wrapper as soon as the command ends (the container
        stays, ``following`` keeps streaming its log), or the container's own when it ended
        first (killed, or unwrapped)."""
        assert self._status is not None, "arm() first"
        follower = asyncio.ensure_future(following())
        try:
            await asyncio.wait({follower, self._status}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            follower.cancel()  # kills the container (the sandbox's follow does)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
            raise
        if follower.done():
            self._disarm()
            return follower.result()
        self.container = container
        self._following = follower
        return self._status.result()

    def _disarm(self) -> None:
        if self._status_fd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._status_fd)
        if self._status is not None and not self._status.done():
            self._status.cancel()

    async def release(self) -> None:
        """Kill the kept container and wait for its log stream to end; idempotent."""
        container, following = self.container, self._following
        self.container = self._following = None
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                await asyncio.to_thread(container.kill)
        if following is not None:
            with contextlib.suppress(Exception):
                await following

    async def close(self) -> None:
        await self.release()
        self._disarm()
        if self._status_fd >= 0:
            os.close(self._status_fd)
            self._status_fd = -1
        await asyncio.to_thread(shutil.rmtree, self.host_dir, True)
