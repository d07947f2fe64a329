"""Issue 13 acceptance 1 on the docker engine, and docker-worker's keep-alive.

A real platform process, a real `tcworker run` process with `engine: docker`, real containers of
the busybox test image. The websocket is found as `tcworker shell` finds it: the private reference
artifact (`private/docker-worker/shell.html` for docker-worker payloads,
`private/generic-worker/shell.html` for generic-worker payloads), whose `socketUrl` query parameter
is the worker's `/shell/<secret>`. The shell is a `docker exec` into the task's container; the
tests check the user, the working directory, the task id, a wrong secret (401), that no exec
process is left once the task ended (the container's processes as `docker top` listed them are
gone from the host), and that a connected session keeps a docker-worker payload's container after
its command exited while the resolution stays the command's.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import docker
import docker.errors
import pexpect
import psutil
import pytest
import taskcluster
from helpers.dockerimage import TEST_IMAGE, import_image
from helpers.dockerruns import leftovers_labelled
from helpers.platformproc import ROOT_CLIENT_ID
from helpers.submitter import Submitter
from helpers.workerproc import clean_env

from tcworker.interactive.protocol import resize_message, stdin_message

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

DOCKER_ARTIFACT = "private/docker-worker/shell.html"
GENERIC_ARTIFACT = "private/generic-worker/shell.html"
USER_IMAGE = "tcworker-test/busybox-user:latest"  # USER 1234:1234, WORKDIR /work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def socket_url_of(submitter: Submitter, task_id: str, artifact: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = dict(submitter.queue.artifact(task_id, "0", artifact))
        except taskcluster.TaskclusterRestFailure:
            time.sleep(0.3)
            continue
        assert answer.get("storageType") == "reference", answer
        return parse_qs(urlparse(str(answer["url"])).query)["socketUrl"][0]
    raise AssertionError(f"{artifact} never appeared")


class Shell:
    """One websocket session speaking generic-worker's framing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.out = b""

    async def __aenter__(self) -> Shell:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url)
        await self.ws.send_bytes(resize_message(120, 40))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.session.close()

    async def run(self, command: str, until: bytes, timeout: float = 30) -> str:
        """Send ``command``; return everything received up to ``until`` (a regex)."""
        await self.ws.send_bytes(stdin_message(command.encode() + b"\n"))
        async with asyncio.timeout(timeout):
            while not re.search(until, self.out):
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.BINARY, (msg, self.out)
                self.out += msg.data
        return self.out.decode(errors="replace")

    async def closed_by_worker(self, timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return True
                self.out += msg.data if isinstance(msg.data, bytes) else b""


async def refused(url: str) -> int:
    secret = url.rsplit("/", 1)[1]
    async with aiohttp.ClientSession() as session:
        async with session.get(url.rsplit("/", 1)[0] + "/" + "x" * len(secret)) as r:
            return r.status


def container_of(client: docker.DockerClient, task_id: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = client.containers.list(filters={"label": f"tcworker.run={task_id}/0"})
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no running container of {task_id}")


def host_pids(container: Any) -> list[int]:
    """Every process of the container (its command, the shell's exec and its children), as the
    host sees them (``docker top``)."""
    top = container.top()
    column = top["Titles"].index("PID")
    return [int(row[column]) for row in top["Processes"]]


def top_of(container: Any, submitter: Submitter, task_id: str) -> list[list[str]]:
    """``docker top`` rows of a container that must still be running (else: what happened)."""
    try:
        return list(container.top()["Processes"])
    except docker.errors.APIError as e:
        submitter.wait_run(task_id, timeout=60)
        raise AssertionError(f"the container is gone: {e}\n{submitter.log(task_id)}") from e


def wait_for_sleeper(container: Any, timeout: float = 15) -> None:
    """Until the session's background ``sleep 1000`` shows in ``docker top``."""
    deadline = time.monotonic() + timeout
    while not any("sleep 1000" in " ".join(row) for row in container.top()["Processes"]):
        assert time.monotonic() < deadline, container.top()
        time.sleep(0.2)


def wait_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes of the session left: {alive}"
        time.sleep(0.2)


def test_docker_worker_payload_shell_and_keep_alive(
    submitter: Submitter, start_worker: Any, docker_client: docker.DockerClient, test_image: str
) -> None:
    import_image(docker_client, USER_IMAGE, changes=["USER 1234:1234", "WORKDIR /work"])
    port = free_port()
    worker = start_worker(
        engine="docker",
        dockerImage=TEST_IMAGE,
        interactivePort=port,
        interactiveMinTime=0,
        interactiveExpirationAfterSession=15,
    )
    command = "touch /tmp/marker; while [ -e /tmp/marker ]; do sleep 0.2; done; echo COMMAND-ENDS; exit 3"
    payload = {"image": USER_IMAGE, "command": ["sh", "-c", command], "maxRunTime": 120}
    task_id = submitter.create({**payload, "features": {"interactive": True}}, mark=False, retries=0)
    url = socket_url_of(submitter, task_id, DOCKER_ARTIFACT)
    assert url.startswith(f"ws://127.0.0.1:{port}/shell/"), url
    secret = url.rsplit("/", 1)[1]
    container = container_of(docker_client, task_id)

    async def session() -> tuple[str, list[int], float]:
        async with Shell(url) as shell:
            text = await shell.run(
                'id; echo "WD=$(pwd)"; echo "TASK=$TASK_ID"; echo DONE-$((40+2))', rb"DONE-42"
            )
            assert await refused(url) == 401
            pids = host_pids(container)  # the command, the wrapper and this exec shell
            # The command ends now; the connected session keeps its container up.
            await shell.run("rm /tmp/marker; sleep 4; echo ALIVE-$((2+3))", rb"ALIVE-5")
            assert submitter.status(task_id)["state"] == "running"
            text += await shell.run("sleep 1000 & sleep 1; echo STILL-$((3+4))", rb"STILL-7")
            await asyncio.to_thread(wait_for_sleeper, container)
        return text, pids, time.monotonic()

    text, pids, left = asyncio.run(session())
    # The session closed: its processes (the background sleep too) are killed at once, while the
    # container itself is still kept (15 s after the last session).
    deadline = time.monotonic() + 8
    while any("sleep 1000" in " ".join(row) for row in top_of(container, submitter, task_id)):
        assert time.monotonic() < deadline, container.top()
        time.sleep(0.2)
    assert time.monotonic() - left < 13 and submitter.status(task_id)["state"] == "running"
    uid = re.search(r"uid=(\d+)", text)
    assert uid and uid.group(1) == "1234", text  # the image's USER: the task's user
    assert re.search(r"^WD=/work\r?$", text, re.M), text  # the image's WORKDIR
    assert f"TASK={task_id}" in text, text
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    resolved = time.monotonic()
    # The resolution is the command's (exit 3 → failed), decided after the session left and the
    # after-session grace (15 s) ran out.
    assert run["state"] == "failed", submitter.explain(task_id)
    assert resolved - left >= 14.5, (resolved, left)
    log = submitter.log(task_id)
    assert "COMMAND-ENDS" in log
    assert re.search(r"Exit Code: 3\b|exit code: 3\b", log), log
    assert "[interactive] the command finished; its container is kept" in log, log
    wait_gone(pids)
    # Removed after the report (off the resolution's path), so it may still be going.
    assert leftovers_labelled(docker_client, f"tcworker.run={task_id}/0") == ([], set())
    assert secret not in log and secret not in worker.output()


def test_docker_worker_payload_without_session_resolves_at_once(
    submitter: Submitter, start_worker: Any, test_image: str
) -> None:
    worker = start_worker(
        engine="docker", dockerImage=TEST_IMAGE, interactivePort=free_port(), interactiveMinTime=0
    )
    payload = {"image": TEST_IMAGE, "command": ["sh", "-c", "echo hi; exit 0"], "maxRunTime": 60}
    started = time.monotonic()
    task_id = submitter.create({**payload, "features": {"interactive": True}}, mark=False, retries=0)
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    assert run["state"] == "completed", submitter.explain(task_id)
    assert time.monotonic() - started < 45
    assert DOCKER_ARTIFACT in submitter.artifacts(task_id, 0)


def test_generic_payload_shell_on_docker_engine(
    submitter: Submitter, start_worker: Any, docker_client: docker.DockerClient, test_image: str
) -> None:
    port = free_port()
    worker = start_worker(engine="docker", dockerImage=TEST_IMAGE, interactivePort=port)
    payload = {
        "command": [["sh", "-c", "touch go-away-marker; while [ -e go-away-marker ]; do sleep 0.2; done"]],
        "maxRunTime": 120,
        "features": {"interactive": True},
    }
    task_id = submitter.create(payload, retries=0)
    url = socket_url_of(submitter, task_id, GENERIC_ARTIFACT)
    secret = url.rsplit("/", 1)[1]
    container = container_of(docker_client, task_id)

    async def session() -> tuple[str, list[int], bool]:
        async with Shell(url) as shell:
            text = await shell.run(
                'id; echo "WD=$(pwd)"; echo "TASK=$TASK_ID"; echo DONE-$((40+2))', rb"DONE-42"
            )
            assert await refused(url) == 401
            await shell.run("sleep 1000 & echo BG=$!", rb"BG=\d+")
            pids = host_pids(container)
            workdir = re.findall(r"^WD=(/\S+)\r?$", text, re.M)[0]
            await asyncio.to_thread(Path(workdir, "go-away-marker").unlink)  # the command ends now
            closed = await shell.closed_by_worker(60)
        return text, pids, closed

    text, pids, closed = asyncio.run(session())
    assert closed
    assert re.search(r"uid=0\(root\)", text), text  # the container's user (the image's: root)
    workdirs = re.findall(r"^WD=(/\S+)\r?$", text, re.M)
    assert workdirs and workdirs[0].startswith(str(worker.workdir / "tasks")), text  # the task directory
    assert f"TASK={task_id}" in text, text
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    assert run["state"] == "completed", submitter.explain(task_id)
    wait_gone(pids)
    assert secret not in submitter.log(task_id) and secret not in worker.output()


def test_tcworker_shell_into_a_docker_worker_task(
    submitter: Submitter, start_worker: Any, docker_client: docker.DockerClient, test_image: str
) -> None:
    """`tcworker shell` finds `private/docker-worker/shell.html` and drives the `docker exec`
    shell through a real PTY: prompt, output, resize (Docker's exec resize API); when the user
    leaves, the kept container goes and the task resolves as its command did."""
    import_image(docker_client, USER_IMAGE, changes=["USER 1234:1234", "WORKDIR /work"])
    worker = start_worker(
        engine="docker",
        dockerImage=TEST_IMAGE,
        interactivePort=free_port(),
        interactiveMinTime=0,
        interactiveExpirationAfterSession=1,
    )
    command = "touch /tmp/stop-me; while [ -e /tmp/stop-me ]; do sleep 0.2; done"
    payload = {"image": USER_IMAGE, "command": ["sh", "-c", command], "maxRunTime": 120}
    task_id = submitter.create({**payload, "features": {"interactive": True}}, mark=False, retries=0)
    socket_url_of(submitter, task_id, DOCKER_ARTIFACT)
    env = clean_env(
        TASKCLUSTER_ROOT_URL=submitter.root_url,
        TASKCLUSTER_CLIENT_ID=ROOT_CLIENT_ID,
        TASKCLUSTER_ACCESS_TOKEN=submitter.root_token,
        PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    child = pexpect.spawn(
        sys.executable, ["-m", "tcworker", "shell", task_id], env=env, timeout=30, dimensions=(24, 80)
    )
    try:
        child.expect(r"[#$] ")
        child.sendline('echo "in $TASK_ID: $((6*7))"; stty size')
        child.expect_exact(f"in {task_id}: 42")
        child.expect_exact("24 80")
        child.setwinsize(33, 111)  # SIGWINCH → resize message → exec resize
        child.sendline("rm /tmp/stop-me; sleep 2; stty size")  # the command ends; we stay
        child.expect_exact("33 111")
        child.sendline("exit")
        child.expect_exact("[tcworker shell] the session ended")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    assert run["state"] == "completed", submitter.explain(task_id)


def test_cancelled_docker_worker_task_closes_its_session(
    submitter: Submitter, start_worker: Any, docker_client: docker.DockerClient, test_image: str
) -> None:
    """The container is kept after a quick command (``interactiveMinTime`` from the start), but
    not past the task's end: cancelling the task while a session is connected closes the
    websocket, removes the container and leaves no exec process."""
    worker = start_worker(
        engine="docker", dockerImage=TEST_IMAGE, interactivePort=free_port(), interactiveMinTime=90
    )
    payload = {"image": TEST_IMAGE, "command": ["sh", "-c", "echo quick; exit 0"], "maxRunTime": 120}
    task_id = submitter.create({**payload, "features": {"interactive": True}}, mark=False, retries=0)
    url = socket_url_of(submitter, task_id, DOCKER_ARTIFACT)

    async def session() -> tuple[list[int], bool]:
        async with Shell(url) as shell:
            await shell.run("echo HELLO-$((1+1))", rb"HELLO-2")
            await shell.run("sleep 1000 & sleep 1; echo BG-$((2+2))", rb"BG-4")
            pids = host_pids(container_of(docker_client, task_id))
            await asyncio.to_thread(submitter.queue.cancelTask, task_id)
            return pids, await shell.closed_by_worker(60)

    pids, closed = asyncio.run(session())
    assert closed
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "canceled"), run
    wait_gone(pids)
    # The queue resolved at once; the worker removes the container now.
    containers, _ = leftovers_labelled(docker_client, f"tcworker.run={task_id}/0")
    assert not containers, "the cancelled task's container is left"
