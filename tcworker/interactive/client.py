"""``tcworker shell TASK_ID``: the interactive shell of a running task, from a terminal.

The websocket is found the way Taskcluster's UI finds it: the task's latest run's private
reference artifact ``private/generic-worker/shell.html`` (docker-worker payloads:
``private/docker-worker/shell.html``; read with the user's credentials, from ``TASKCLUSTER_*`` variables) points at a page whose ``socketUrl`` query parameter is the
worker's ``/shell/<secret>``. The terminal is put in raw mode (restored on exit); keystrokes go
as stdin messages, SIGWINCH sends the new size, output is written as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import taskcluster

from tcworker.interactive.protocol import resize_message, stdin_message

ARTIFACT_NAME = "private/generic-worker/shell.html"
DOCKER_ARTIFACT_NAME = "private/docker-worker/shell.html"


class ShellNotAvailable(Exception):
    """The task has no shell to open (not running, no interactive feature, no access)."""


def find_socket_url(options: Mapping[str, Any], task_id: str) -> str:
    """The websocket URL of the task's latest run, from its private reference artifact."""
    queue = taskcluster.Queue(dict(options))
    try:
        runs = queue.status(task_id)["status"].get("runs") or []
        if not runs:
            raise ShellNotAvailable(f"task {task_id} has no run yet")
        run = runs[-1]
        if run.get("state") != "running":
            raise ShellNotAvailable(f"task {task_id} run {run['runId']} is {run.get('state')}, not running")
        payload = queue.task(task_id).get("payload") or {}
    except taskcluster.TaskclusterRestFailure as e:
        raise ShellNotAvailable(f"cannot read task {task_id}: {e}") from e
    # docker-worker payloads (they name an image) publish docker-worker's reference instead.
    name = DOCKER_ARTIFACT_NAME if "image" in payload else ARTIFACT_NAME
    try:
        answer = queue.artifact(task_id, str(run["runId"]), name)
    except taskcluster.TaskclusterRestFailure as e:
        raise ShellNotAvailable(f"cannot read {name} of task {task_id}: {e}") from e
    url = str(dict(answer).get("url", ""))
    socket_url = (parse_qs(urlparse(url).query).get("socketUrl") or [""])[0]
    if not socket_url.startswith(("ws://", "wss://")):
        raise ShellNotAvailable(f"{name} of task {task_id} does not name a websocket")
    return socket_url


async def attach(socket_url: str) -> int:
    """Bridge this terminal to the websocket until either side ends."""
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(socket_url)
        except aiohttp.WSServerHandshakeError as e:
            print(f"tcworker shell: the worker refused the shell ({e.status})", file=sys.stderr)
            return 1

        def send_size() -> None:
            with contextlib.suppress(OSError):
                size = os.get_terminal_size(stdout)
                asyncio.ensure_future(ws.send_bytes(resize_message(size.columns, size.lines)))

        def keys() -> None:
            data = os.read(stdin, 4096)
            if data:
                asyncio.ensure_future(ws.send_bytes(stdin_message(data)))
            else:
                loop.remove_reader(stdin)

        try:
            if saved is not None:
                tty.setraw(stdin)
            send_size()
            loop.add_signal_handler(signal.SIGWINCH, send_size)
            loop.add_reader(stdin, keys)
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    os.write(stdout, msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    os.write(stdout, msg.data.encode())
        finally:
            loop.remove_reader(stdin)
            loop.remove_signal_handler(signal.SIGWINCH)
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            await ws.close()
    os.write(stdout, b"\r\n[tcworker shell] the session ended\r\n")
    return 0
