"""One websocket server per worker process for the interactive shells of every running task.

A run ``register``s a ``ShellTarget`` (directory, environment, identity) and gets back a random
secret; ``/shell/<secret>`` then opens a ``PtySession``: bash (or sh) on a new PTY, in its own
session and process group, with the PTY as controlling terminal. A target with an ``opener``
(container engines: ``Sandbox.open_shell``, a ``docker exec``) gets a ``ChannelSession`` instead,
which bridges the shell channel the engine made; the wire is the same. ``unregister`` (the task ended)
closes every websocket of the run and kills every process of its sessions (process group, plus
any descendant that left it). Secrets are compared in constant time; a wrong one is ``401``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import logging
import os
import secrets
import shutil
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiohttp import WSMsgType, web

from tcworker.engines import runas
from tcworker.engines.base import ShellChannel, Unsupported
from tcworker.interactive.protocol import MSG_RESIZE, MSG_STDIN, SHELL_PATH, parse_resize

log = logging.getLogger(__name__)

READ_SIZE = 4096


@dataclass
class ShellTarget:
    """Where a run's shells start and as whom (``uid is None``: the worker's own user)."""

    directory: Path
    env: dict[str, str]
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    # Container engines: the shell comes from the sandbox (``Sandbox.open_shell``), not a host PTY.
    opener: Callable[[], Awaitable[ShellChannel]] | None = None
    # Called whenever a session starts or ends (the docker keep-alive counts connected sessions).
    on_change: Callable[[], None] | None = None
    sessions: set[PtySession | ChannelSession] = field(default_factory=set)

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def shell_program() -> str:
    return shutil.which("bash") or shutil.which("sh") or "/bin/sh"


def _make_controlling_terminal() -> None:
    """In the child after setsid: stdin (the PTY slave) becomes the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtySession:
    """One shell on one PTY, bridged to one websocket."""

    def __init__(self, target: ShellTarget, ws: web.WebSocketResponse) -> None:
        self.target = target
        self.ws = ws
        self.proc: asyncio.subprocess.Process | None = None
        self.master = -1
        self._ended = asyncio.Event()

    async def start(self) -> None:
        master, slave = os.openpty()
        self.master = master
        target = self.target
        env = dict(target.env)
        env.setdefault("TERM", "xterm-256color")
        # util-linux ``setsid --ctty`` makes the new session and takes the PTY as controlling
        # terminal, then execs the shell (same pid; the child is no group leader, so no fork):
        # no ``preexec_fn``, which is unsafe in the worker's threaded process.
        setsid = shutil.which("setsid")
        if setsid is not None:
            argv, session = [setsid, "--ctty", shell_program()], {}
        else:
            argv, session = [shell_program()], {"start_new_session": True, "preexec_fn": _make_controlling_terminal}
        if target.uid is not None:  # a missing gid means the uid's own group, never the worker's
            gid = target.uid if target.gid is None else target.gid
            argv = runas.as_user(argv, target.uid, gid, target.groups)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=str(target.directory),
                env=env,
                **session,  # type: ignore[arg-type]
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the shell and everything holding the PTY are gone
            data = b""
        if not data:
            self._stop_reading()
            self._ended.set()
            return
        asyncio.ensure_future(self._send(data))

    async def _send(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(data)

    def _stop_reading(self) -> None:
        if self.master >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self.master)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.01)  # the shell is not reading; wait without blocking the loop
                continue
            view = view[n:]

    def _resize(self, columns: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    async def pump(self) -> None:
        """Websocket → PTY until the client leaves or the shell ends."""
        reader = asyncio.ensure_future(self._client_messages())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            ended.cancel()

    async def _client_messages(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == MSG_STDIN:
                await self._write(data[1:])
            elif data[0] == MSG_RESIZE:
                size = parse_resize(data)
                if size is not None:
                    self._resize(*size)

    async def close(self) -> None:
        """Kill every process of the session and release the PTY (idempotent)."""
        self._stop_reading()
        proc = self.proc
        if proc is not None:
            await asyncio.to_thread(kill_session, proc.pid)  # also when the shell itself is gone
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()


class ChannelSession:
    """One shell made by the engine (a ``ShellChannel``), bridged to one websocket."""

    def __init__(self, target: ShellTarget, ws: web.WebSocketResponse) -> None:
        assert target.opener is not None
        self.target = target
        self.ws = ws
        self.channel: ShellChannel | None = None

    async def start(self) -> None:
        assert self.target.opener is not None
        try:
            self.channel = await self.target.opener()
        except Unsupported as e:
            raise OSError(str(e)) from e

    async def pump(self) -> None:
        """Both directions until the client leaves or the shell ends."""
        outbound = asyncio.ensure_future(self._shell_output())
        inbound = asyncio.ensure_future(self._client_messages())
        try:
            await asyncio.wait({outbound, inbound}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            outbound.cancel()
            inbound.cancel()

    async def _shell_output(self) -> None:
        assert self.channel is not None
        while data := await self.channel.read():
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)

    async def _client_messages(self) -> None:
        assert self.channel is not None
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == MSG_STDIN:
                await self.channel.write(data[1:])
            elif data[0] == MSG_RESIZE:
                size = parse_resize(data)
                if size is not None:
                    await self.channel.resize(*size)

    async def close(self) -> None:
        """Kill the shell's processes and close the websocket (idempotent)."""
        if self.channel is not None:
            await self.channel.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()


def kill_session(sid: int) -> None:
    """SIGKILL every process of the shell's session (the shell is its leader, so ``sid`` is its
    pid): background jobs have their own process groups and outlive a dead shell (the engine
    may have killed it first), but they stay in its session. Plus the shell's descendants."""
    doomed: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        doomed += psutil.Process(sid).children(recursive=True)
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getsid(proc.pid) == sid:
                doomed.append(proc)
    for proc in doomed:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class ShellServer:
    """``/shell/<secret>`` for every registered run of this worker process."""

    def __init__(self) -> None:
        self._targets: dict[str, ShellTarget] = {}
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get(SHELL_PATH + "{secret}", self._handle)
        runner = web.AppRunner(app, access_log=None)  # the path holds the secret: never logged
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        for secret in list(self._targets):
            await self.unregister(secret)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, secret: str) -> str:
        return f"ws://{self.host}:{self.port}{SHELL_PATH}{secret}"

    def register(self, target: ShellTarget) -> str:
        secret = secrets.token_urlsafe(24)
        self._targets[secret] = target
        return secret

    async def unregister(self, secret: str) -> None:
        target = self._targets.pop(secret, None)
        if target is not None:
            await asyncio.gather(*(s.close() for s in list(target.sessions)), return_exceptions=True)

    def _find(self, offered: str) -> ShellTarget | None:
        found = None
        for secret, target in self._targets.items():  # every comparison runs: constant time
            if hmac.compare_digest(secret.encode(), offered.encode()):
                found = target
        return found

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = self._find(request.match_info["secret"])
        if target is None:
            return web.Response(status=401, text="Access denied")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session: PtySession | ChannelSession = (
            ChannelSession(target, ws) if target.opener is not None else PtySession(target, ws)
        )
        target.sessions.add(session)
        target.changed()
        try:
            await session.start()
            await session.pump()
        except OSError as e:
            log.warning("interactive shell could not start: %s", e)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(f"the shell could not start: {e}\r\n".encode())
        finally:
            target.sessions.discard(session)
            await session.close()
            target.changed()
        return ws
