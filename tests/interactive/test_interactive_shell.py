"""Issue 13 acceptance 1 (simple engine): the shell of a running generic-worker task over its websocket.

A real platform process and a real `tcworker run` process. The test finds the websocket the way
`tcworker shell` does: through the private reference artifact `private/generic-worker/shell.html`
(read with credentials), whose `socketUrl` query parameter is the worker's `/shell/<secret>`.
It speaks generic-worker's framing (type byte 1 = stdin, 2 = resize; raw PTY output back).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import psutil
import pytest
import taskcluster
from helpers.ci import skip_or_fail
from helpers.submitter import Submitter

from tcworker.interactive.protocol import resize_message, stdin_message

ARTIFACT = "private/generic-worker/shell.html"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def socket_url_of(submitter: Submitter, task_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = dict(submitter.queue.artifact(task_id, "0", ARTIFACT))
        except taskcluster.TaskclusterRestFailure:
            time.sleep(0.3)
            continue
        assert answer.get("storageType") == "reference", answer
        return parse_qs(urlparse(str(answer["url"])).query)["socketUrl"][0]
    raise AssertionError(f"{ARTIFACT} never appeared")


async def first_output(ws: Any) -> None:
    async with asyncio.timeout(30):
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.BINARY, msg


async def converse(url: str, command: str, until: bytes, timeout: float = 30) -> tuple[bytes, list[int]]:
    """Run ``command`` in the shell; return the output up to ``until`` and the shell's pids."""
    out = b""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_bytes(resize_message(100, 30))
        await first_output(ws)  # the prompt: the shell reads its terminal now
        await ws.send_bytes(stdin_message(command.encode() + b"\n"))
        async with asyncio.timeout(timeout):
            while until not in out:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.BINARY, (msg, out)
                out += msg.data
    return out, []


async def held_open(url: str, started: bytes) -> tuple[aiohttp.ClientSession, Any, bytes]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url)
    await first_output(ws)
    await ws.send_bytes(resize_message(120, 40))
    await ws.send_bytes(stdin_message(b"stty size; env -i sleep 1000 & echo BG=$!\n"))
    out = b""
    async with asyncio.timeout(30):
        while not re.search(started + rb"(\d+)\s", out):
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, (msg, out)
            out += msg.data
    return session, ws, out


@pytest.fixture
def homes_dir() -> Iterator[Path]:
    """A tasksDir task users can traverse (pytest's tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="tcw-interactive-homes-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def multiuser_unavailable() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("useradd") is None:
        return "the multiuser engine needs Linux, root and useradd"
    return None


pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("engine", ["simple", pytest.param("multiuser", marks=pytest.mark.root)])
def test_shell_of_running_task(
    submitter: Submitter, start_worker: Any, tmp_path: Path, homes_dir: Path, engine: str
) -> None:
    port = free_port()
    payload: dict[str, Any] = {
        "command": [["sh", "-c", "touch go-away-marker; while [ -e go-away-marker ]; do sleep 0.2; done"]],
        "maxRunTime": 300,
        "features": {"interactive": True},
    }
    if engine == "multiuser":
        reason = multiuser_unavailable()
        if reason:
            skip_or_fail(reason)
        worker = start_worker(interactivePort=port, engine="multiuser", headlessTasks=True, tasksDir=str(homes_dir))
    else:
        worker = start_worker(interactivePort=port)
        # The shell is bash with the task's environment: an own HOME keeps the host's ~/.bashrc
        # (pyenv hooks on this machine) out of it.
        payload["env"] = {"HOME": str(tmp_path)}
    task_id = submitter.create(payload)
    url = socket_url_of(submitter, task_id)
    assert url.startswith(f"ws://127.0.0.1:{port}/shell/"), url
    secret = url.rsplit("/", 1)[1]

    out, _ = asyncio.run(converse(url, 'id; pwd; echo "TASK=$TASK_ID"; echo DONE-$((40+2))', b"DONE-42"))
    text = out.decode(errors="replace")
    uid = int(re.search(r"uid=(\d+)\((\S+?)\)", text).group(1))  # type: ignore[union-attr]
    if engine == "simple":
        assert uid == os.getuid(), text  # the worker's own user
    else:
        assert uid != os.getuid() and re.search(r"uid=\d+\(task_", text), text  # the task user
    pwd_lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("/")]
    assert any(Path(p, "go-away-marker").exists() for p in pwd_lines), text  # the task directory
    assert f"TASK={task_id}" in text, text

    # A wrong secret is refused with 401, before any websocket upgrade.
    async def wrong() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(url.rsplit("/", 1)[0] + "/" + "x" * len(secret)) as r:
                return r.status

    assert asyncio.run(wrong()) == 401

    async def end_task_with_session_open() -> tuple[list[int], bool]:
        session, ws, out = await held_open(url, b"BG=")
        assert b"40 120" in out, out  # the resize reached the PTY (rows, columns)
        match = re.search(rb"BG=(\d+)\s", out)
        assert match, out
        bg = int(match.group(1))
        pids = [bg]
        workdir = [p for p in (ln.strip() for ln in text.splitlines()) if p.startswith("/")][0]
        os.unlink(os.path.join(workdir, "go-away-marker"))  # the task's command ends now
        closed = False
        try:
            async with asyncio.timeout(60):
                while True:
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        closed = True
                        break
        finally:
            await ws.close()
            await session.close()
        return pids, closed

    pids, closed = asyncio.run(end_task_with_session_open())
    assert closed
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, f"session processes left: {pids}"
        time.sleep(0.2)
    # The secret is in no public artifact and not in the task log.
    log = submitter.log(task_id)
    assert secret not in log
    assert secret not in worker.output()  # nor in the worker's own log
    public = [name for name in submitter.artifacts(task_id, 0) if name.startswith("public/")]
    for name in public:
        content, _ = submitter.download(task_id, 0, name)
        assert secret.encode() not in content, name
    assert "[interactive] shell available" in log
