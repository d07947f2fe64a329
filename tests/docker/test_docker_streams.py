"""How the docker engine follows a running container: its ``die`` event, its output stream, and
the threads those blocking calls hold (real dockerd, real containers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest
from helpers.dockerimage import TEST_IMAGE
from helpers.dockerruns import log_text, make_run

from tcworker.engines.docker.exitwatch import ExitWatch
from tcworker.engines.docker.sandbox import DockerSandbox

pytestmark = pytest.mark.docker


async def test_exit_watch_reports_the_exit_code_of_the_die_event(docker_client: docker.DockerClient) -> None:
    api = docker_client.api
    container = api.create_container(TEST_IMAGE, ["sh", "-c", "exit 7"])["Id"]
    try:
        watch = await asyncio.to_thread(ExitWatch.open, api, container)
        await asyncio.to_thread(api.start, container)
        ended = await asyncio.wait_for(asyncio.to_thread(watch.wait_exit), 60)
        assert (ended.code, ended.oom_killed) == (7, False)
    finally:
        await asyncio.to_thread(api.remove_container, container, force=True)


async def test_exit_watch_reports_an_oom_kill_before_the_exit(docker_client: docker.DockerClient) -> None:
    """A child killed by the OOM killer while the main process exits 3: ``State.OOMKilled`` as
    Docker's ``oom`` event tells it, with the exit code Docker recorded."""
    api = docker_client.api
    limits = api.create_host_config(mem_limit="16m", memswap_limit="16m")
    script = "head -c 200m /dev/zero | tail; exit 3"
    container = api.create_container(TEST_IMAGE, ["sh", "-c", script], host_config=limits)["Id"]
    try:
        watch = await asyncio.to_thread(ExitWatch.open, api, container)
        await asyncio.to_thread(api.start, container)
        ended = await asyncio.wait_for(asyncio.to_thread(watch.wait_exit), 60)
        state = api.inspect_container(container)["State"]
        # The kernel picks the victim: usually ``tail`` (the shell then exits 3), but under memory
        # pressure on a busy host it sometimes kills the shell too (137). Either way the watch must
        # tell what Docker recorded.
        assert ended.oom_killed is True and state["OOMKilled"] is True
        assert ended.code == state["ExitCode"] and ended.code in (3, 137)
    finally:
        await asyncio.to_thread(api.remove_container, container, force=True)


async def test_closing_an_exit_watch_ends_it_without_an_exit_code(docker_client: docker.DockerClient) -> None:
    """What lets the engine fall back to ``wait``: a closed or broken stream raises, never hangs."""
    api = docker_client.api
    container = api.create_container(TEST_IMAGE, ["true"])["Id"]
    try:
        watch = await asyncio.to_thread(ExitWatch.open, api, container)
        waiting = asyncio.ensure_future(asyncio.to_thread(watch.wait_exit))
        await asyncio.sleep(0.2)
        watch.close()
        with pytest.raises(EOFError):
            await asyncio.wait_for(waiting, 30)
    finally:
        await asyncio.to_thread(api.remove_container, container, force=True)


async def test_running_containers_do_not_starve_the_loops_thread_pool(make_engine, tmp_path: Path) -> None:
    """Each running container holds blocking calls (output, wait, die event) for its whole life.
    In ``asyncio.to_thread``'s default pool (six threads on two cores) four containers took every
    thread, so any other ``to_thread`` of the worker — including the ``docker kill`` of an
    over-time task — waited for a container to end. They run on threads of their own now."""
    engine = await make_engine()
    payload = {"image": TEST_IMAGE, "command": ["sh", "-c", "echo ready; sleep 8"], "maxRunTime": 60}
    sandboxes: list[DockerSandbox] = []
    runs = []
    for _ in range(4):
        run = make_run(tmp_path, payload)
        box = await engine.prepare(run)
        assert isinstance(box, DockerSandbox)
        sandboxes.append(box)
        runs.append(run)
    try:
        executing = [
            asyncio.ensure_future(box.execute(run.payload["command"], {}, run.log))
            for box, run in zip(sandboxes, runs, strict=True)
        ]
        deadline = time.monotonic() + 60
        while not all("ready" in log_text(run) for run in runs):
            assert time.monotonic() < deadline, "the containers did not start"
            await asyncio.sleep(0.1)
        # Starved, the fourth container could not even be created or started before others ended.
        assert not any(e.done() for e in executing), "the four containers never ran at the same time"
        started = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(time.sleep, 0), 4)  # far less than the sleeps left
        assert time.monotonic() - started < 4
        results = await asyncio.wait_for(asyncio.gather(*executing), 60)
        assert [r.exit_code for r in results] == [0, 0, 0, 0]
    finally:
        for box in sandboxes:
            await box.destroy()
