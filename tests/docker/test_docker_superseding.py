"""Superseding through a real worker (issue 5, acceptance 1: "superseding against a small superseder
HTTP server in the test").

A real ``tcworker run`` process with ``"engine": "docker"`` claims docker-worker tasks whose payloads
carry ``supersederUrl`` from a real platform process (``shared_platform``). The superseder is a tiny
aiohttp server on 127.0.0.1 run by the test (in a thread of its own, because the test itself blocks
in the official sync client). Every test creates all its tasks *before* it starts its worker, so
the worker claims one of them with claimWork and, when the superseder lists it, the others with
claimTask, as the protocol says.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import slugid
from aiohttp import web
from dockerhelpers import TEST_IMAGE

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "e2e")]
from e2e_harness import (  # noqa: E402
    Submitter,
    WorkerProcess,
    clean_env,
    new_signing_key,
    unique_worker_type,
    worker_config,
)

pytestmark = pytest.mark.docker

LOG = "public/logs/live_backing.log"


class SupersederServer:
    """``GET /<key>?taskId=X`` → ``{"supersedes": lists[key]}``; every request's (key, taskId) is kept."""

    def __init__(self) -> None:
        self.lists: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="superseder", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.requests.append((key, request.query.get("taskId")))
        return web.json_response({"supersedes": self.lists.get(key, [])})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{key}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def start(self) -> SupersederServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def asked_for(self, key: str) -> list[str | None]:
        return [task_id for k, task_id in self.requests if k == key]


@pytest.fixture(scope="module")
def superseder() -> Iterator[SupersederServer]:
    server = SupersederServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def submitter(shared_platform: Any) -> Submitter:
    """A task queue of its own per test: the worker of one test never sees another test's tasks."""
    return Submitter(
        shared_platform.queue(),
        shared_platform.root_url,
        unique_worker_type(),
        shared_platform.root_access_token,
    )


@pytest.fixture
def start_worker(
    tmp_path: Path,
    shared_platform: Any,
    submitter: Submitter,
    test_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[Any]:
    """``start_worker()`` starts a docker-engine worker on this test's queue (called after the tasks exist)."""
    procs: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        workdir = tmp_path / "worker"
        workdir.mkdir()
        config = worker_config(
            shared_platform.root_url,
            shared_platform.root_access_token,
            workdir,
            new_signing_key(workdir / "ed25519.key"),
            engine="docker",
            dockerImage=TEST_IMAGE,
            workerType=submitter.worker_type,
            workerGroup="docker-supersede",
            capacity=1,
        )
        procs.append(WorkerProcess(workdir, config, clean_env()).start())
        return procs[-1]

    yield start
    for proc in procs:
        proc.stop()
        print(f"\n===== docker worker output (tail) =====\n{proc.tail(8000)}")


def _create(submitter: Submitter, task_id: str, token: str, superseder_url: str | None) -> None:
    """A docker-worker task that prints ``ran-<token>-<TASK_ID>`` (so its output can be told apart)."""
    payload: dict[str, Any] = {
        "image": TEST_IMAGE,
        "command": ["sh", "-c", f'echo "ran-{token}-$TASK_ID"'],
        "maxRunTime": 60,
    }
    if superseder_url is not None:
        payload["supersederUrl"] = superseder_url
    submitter.queue.createTask(task_id, submitter.task_definition(payload, retries=0))


def _json_artifact(submitter: Submitter, task_id: str, name: str) -> Any:
    data, content_type = submitter.download(task_id, 0, name)
    assert content_type.startswith("application/json"), content_type
    return json.loads(data)


def _closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"


def _assert_no_containers_left(client: docker.DockerClient, worker: WorkerProcess) -> None:
    label = f"tcworker.worker={worker.config['workerGroup']}/{worker.worker_id}"
    assert client.containers.list(all=True, filters={"label": label}) == []


def test_only_the_primary_runs_and_the_secondaries_are_superseded(
    submitter: Submitter,
    superseder: SupersederServer,
    start_worker: Any,
    docker_client: docker.DockerClient,
) -> None:
    primary, second, third = slugid.nice(), slugid.nice(), slugid.nice()
    key = f"set-{slugid.nice()}"
    superseder.lists[key] = [primary, second, third]
    # Created last-listed first: claimWork (FIFO within a priority) hands out a secondary, so the
    # worker has to claim the primary itself and run a task other than the one it was given.
    tokens = {third: "third", second: "second", primary: "primary"}
    for task_id, token in tokens.items():
        _create(submitter, task_id, token, superseder.url(key))
    for task_id in tokens:
        assert submitter.status(task_id)["state"] == "pending"

    worker = start_worker()
    runs = {t: submitter.wait_run(t, timeout=120, worker=worker) for t in (primary, second, third)}

    assert runs[primary]["state"] == "completed", submitter.explain(primary)
    primary_log = submitter.log(primary)
    assert f"ran-primary-{primary}" in primary_log
    assert "ran-second" not in primary_log and "ran-third" not in primary_log
    assert _json_artifact(submitter, primary, "public/supersedes.json") == [
        {"taskId": second, "runId": 0},
        {"taskId": third, "runId": 0},
    ]

    for secondary in (second, third):
        assert (runs[secondary]["state"], runs[secondary].get("reasonResolved")) == (
            "exception",
            "superseded",
        ), runs[secondary]
        assert runs[secondary]["workerId"] == worker.worker_id
        assert _json_artifact(submitter, secondary, "public/superseded-by.json") == {
            "taskId": primary,
            "runId": 0,
        }
        # The secondary's command never ran: no output of it anywhere, and no retry run.
        names = submitter.artifacts(secondary, 0)
        assert set(names) <= {"public/superseded-by.json", LOG}, sorted(names)
        if LOG in names:
            assert "ran-" not in submitter.log(secondary)
        assert f"ran-{tokens[secondary]}" not in primary_log
        assert len(submitter.status(secondary)["runs"]) == 1

    # One lookup, for the task claimWork handed out (the others were claimed with claimTask).
    assert superseder.asked_for(key) == [third], "claimWork should have handed out the oldest task"
    assert worker.running, worker.tail()
    _assert_no_containers_left(docker_client, worker)


def test_unlisted_task_and_unreachable_superseder_run_normally(
    submitter: Submitter,
    superseder: SupersederServer,
    start_worker: Any,
    docker_client: docker.DockerClient,
) -> None:
    unlisted, other, orphan = slugid.nice(), slugid.nice(), slugid.nice()
    key = f"set-{slugid.nice()}"
    # The superseder lists a real pending task, but not the one asking: nothing is superseded.
    superseder.lists[key] = [other]
    _create(submitter, unlisted, "unlisted", superseder.url(key))
    _create(submitter, other, "other", None)
    _create(submitter, orphan, "orphan", _closed_port_url())
    for task_id in (unlisted, other, orphan):
        assert submitter.status(task_id)["state"] == "pending"

    worker = start_worker()
    for task_id, token in ((unlisted, "unlisted"), (other, "other"), (orphan, "orphan")):
        run = submitter.wait_run(task_id, timeout=120, worker=worker)
        assert run["state"] == "completed", submitter.explain(task_id)
        assert f"ran-{token}-{task_id}" in submitter.log(task_id)
        names = submitter.artifacts(task_id, 0)
        assert "public/supersedes.json" not in names and "public/superseded-by.json" not in names, names
        assert len(submitter.status(task_id)["runs"]) == 1

    assert superseder.asked_for(key) == [unlisted]
    orphan_log = submitter.log(orphan)
    assert "superseder" in orphan_log and "running this task normally" in orphan_log, orphan_log
    assert worker.running, worker.tail()
    _assert_no_containers_left(docker_client, worker)
