"""Start and stop the platform: ``tcworker queue serve`` and the embeddable ``start_platform``.

``start_platform`` binds 127.0.0.1 (port 0 → a free port), opens the store, starts the
resolvers and returns a :class:`RunningPlatform` whose ``root_url`` is the real bound address;
``tcworker local`` embeds it in its own event loop. ``serve_main`` runs it until SIGTERM/SIGINT
and prints ``rootUrl: ...`` (and the root access token when it was not given) once it accepts
connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from aiohttp import web

from tcworker.fsinfo import hint_slow_file_creation
from tcworker.platform.app import ROOT_URL_KEY, build_app
from tcworker.platform.auth.service import ROOT_CLIENT_ID, ClientsFileError
from tcworker.platform.services import PlatformConfig, Services

log = logging.getLogger(__name__)
TOKEN_FILE = "root-access-token"


@dataclass
class RunningPlatform:
    """A platform serving in the current event loop."""

    root_url: str
    root_credentials: dict[str, str]
    runner: web.AppRunner = field(repr=False)
    services: Services = field(repr=False)

    async def stop(self) -> None:
        """Release long-polls, stop accepting, finish in-flight requests, close the store."""
        self.services.waiters.close()
        await self.runner.cleanup()
        await self.services.close()


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def root_token(data_dir: Path, given: str | None) -> tuple[str, bool]:
    """(token, generated?): the given token, else the one kept in the data dir, else a new one."""
    if given:
        return given, False
    path = data_dir / TOKEN_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), True
    token = secrets.token_urlsafe(33)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, True


async def start_platform(
    *,
    listen: str = "127.0.0.1:0",
    data_dir: Path,
    root_access_token: str | None = None,
    claim_timeout: float = 1200.0,
    clients_file: Path | None = None,
) -> RunningPlatform:
    host, port = _parse_listen(listen)
    data_dir = Path(data_dir)
    token, _ = root_token(data_dir, root_access_token)
    services = Services(
        PlatformConfig(data_dir, token, claim_timeout, Path(clients_file) if clients_file else None)
    )
    await services.open()
    try:
        app = build_app(services)
        # auto_decompress=False: a gzip PUT to an object data URL is stored as sent (objects/content.py).
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=5.0, auto_decompress=False
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        root_url = f"http://{url_host}:{bound_port}"
        app[ROOT_URL_KEY][0] = root_url
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        await services.close()
        raise
    return RunningPlatform(root_url, {"clientId": ROOT_CLIENT_ID, "accessToken": token}, runner, services)


async def _serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    token, generated = root_token(data_dir, args.root_access_token)
    platform = await start_platform(
        listen=args.listen,
        data_dir=data_dir,
        root_access_token=token,
        claim_timeout=float(args.claim_timeout),
        clients_file=Path(args.clients) if args.clients else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"rootUrl: {platform.root_url}", flush=True)
    hint_slow_file_creation(data_dir, "data dir")
    if generated:
        print(f"root accessToken: {token}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await platform.stop()
    return 0


def serve_main(args: argparse.Namespace) -> int:
    """Entry point of ``tcworker queue serve``; exit 0 after SIGTERM/SIGINT, 2 on bad arguments."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The event loop and the database thread hand work to each other for every request; with the
    # default 5 ms GIL switch interval a busy loop can make the database thread wait that long.
    sys.setswitchinterval(0.0005)
    try:
        # uvloop: the event loop, sockets and transports in C. Every request crosses the loop
        # several times (read, the database thread's hand-back, write); with the standard loop that
        # machinery cost more of the platform's CPU per task than its own request handling.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(args))
    except (ValueError, ClientsFileError, OSError) as exc:
        print(f"tcworker queue serve: {exc}", file=sys.stderr)
        return 2
