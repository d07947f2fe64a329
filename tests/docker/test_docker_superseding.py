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

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import slugid
from helpers.ci import free_port
from helpers.dockerimage import TEST_IMAGE
from helpers.dockerruns import leftovers_of_worker
from helpers.submitter import Submitter
from helpers.superseding import Superseder, in_background
from helpers.workerproc import WorkerProcess, start_worker_process

pytestmark = pytest.mark.docker

LOG = "public/logs/live_backing.log"


@pytest.fixture(scope="module")
def superseder() -> Iterator[Superseder]:
    with in_background(Superseder()) as server:
        yield server


@pytest.fixture
def submitter(shared_platform: Any) -> Submitter:
    """A task queue of its own per test: the worker of one test never sees another test's tasks."""
    return Submitter.for_platform(shared_platform)


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
        procs.append(
            start_worker_process(
                shared_platform,
                tmp_path / "worker",
                engine="docker",
                dockerImage=TEST_IMAGE,
                workerType=submitter.worker_type,
                workerGroup="docker-supersede",
                capacity=1,
            )
        )
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
    return f"http://127.0.0.1:{free_port()}/down"


def _assert_no_containers_left(client: docker.DockerClient, worker: WorkerProcess) -> None:
    containers, _ = leftovers_of_worker(client, f"{worker.config['workerGroup']}/{worker.worker_id}")
    assert containers == []


def test_only_the_primary_runs_and_the_secondaries_are_superseded(
    submitter: Submitter,
    superseder: Superseder,
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
    superseder: Superseder,
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
