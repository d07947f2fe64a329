"""TaskRun's feature pipeline against the real platform (in this event loop, over HTTP) and the
real simple engine: start order, stop registered before start, reverse stops, every error
collected, gates / scopes / reserved names, and the resolution the queue ends up with."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import slugid
import taskcluster.aio
from taskcluster.aio import download

from tcworker import tctime
from tcworker.config import WorkerConfig, from_mapping
from tcworker.engines.simple import SimpleEngine
from tcworker.errors import MalformedPayload, TaskFailed
from tcworker.features import load_features
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.features.command_executor import CommandExecutorFeature
from tcworker.platform.serve import RunningPlatform, start_platform
from tcworker.tcapi.clients import Clients
from tcworker.worker.taskrun import TaskRun

QUEUE = "unit-prov/pipeline"


class Recorder(Feature):
    """A feature that records its hooks; optionally fails in start or stop."""

    def __init__(
        self,
        name: str,
        events: list[str],
        *,
        fail_start: Exception | None = None,
        fail_stop: Exception | None = None,
        gate: bool = True,
        scopes: list[str] | None = None,
        reserved: list[str] | None = None,
    ) -> None:
        self.name = name
        self.events = events
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.gate = gate
        self.scopes = scopes or []
        self.reserved = reserved or []

    def enabled(self, config: WorkerConfig) -> bool:
        return self.gate

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        feature = self

        class _Run(TaskFeature):
            def required_scopes(self) -> list[str]:
                return feature.scopes

            def reserved_artifacts(self) -> list[str]:
                return feature.reserved

            async def start(self) -> None:
                feature.events.append(f"start {feature.name}")
                if feature.fail_start:
                    raise feature.fail_start

            async def stop(self, outcome: RunOutcome) -> None:
                feature.events.append(f"stop {feature.name}")
                if feature.fail_stop:
                    raise feature.fail_stop

        return _Run()


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[RunningPlatform]:
    running = await start_platform(listen="127.0.0.1:0", data_dir=tmp_path / "platform")
    try:
        yield running
    finally:
        await running.stop()


def make_config(platform: RunningPlatform, tmp_path: Path) -> WorkerConfig:
    return from_mapping(
        {
            "rootURL": platform.root_url,
            "clientId": platform.root_credentials["clientId"],
            "accessToken": platform.root_credentials["accessToken"],
            "provisionerId": QUEUE.split("/")[0],
            "workerType": QUEUE.split("/")[1],
            "workerId": "unit-worker",
            "workerGroup": "unit",
            "tasksDir": str(tmp_path / "tasks"),
        }
    )


async def run_task(
    platform: RunningPlatform,
    tmp_path: Path,
    payload: dict[str, Any],
    features: list[Feature],
    scopes: Sequence[str] = (),
) -> tuple[str, dict[str, Any], str]:
    """Create a task, claim it, run it through TaskRun; returns (taskId, final run status, log text)."""
    config = make_config(platform, tmp_path)
    queue = taskcluster.aio.Queue({"rootUrl": platform.root_url, "credentials": platform.root_credentials})
    task_id = slugid.nice()
    await queue.createTask(
        task_id,
        {
            "taskQueueId": QUEUE,
            "created": tctime.to_json(tctime.now()),
            "deadline": tctime.to_json(tctime.from_now(600)),
            "scopes": list(scopes),
            "payload": payload,
            "metadata": {"name": "t", "description": "t", "owner": "a@b.c", "source": "https://x/y"},
        },
    )
    claims = await queue.claimWork(QUEUE, {"workerGroup": "unit", "workerId": "unit-worker", "tasks": 1})
    assert len(claims["tasks"]) == 1
    engine = SimpleEngine()
    await engine.initialise(config)
    clients = Clients(platform.root_url, config.credentials)
    try:
        run = TaskRun(
            config=config,
            engine=engine,
            features=features,
            clients=clients,
            claim=claims["tasks"][0],
            scratch_root=tmp_path / "scratch",
        )
        await run.run()
    finally:
        await clients.close()
        await engine.shutdown()  # its parked command stubs and their cgroups
    status = (await queue.status(task_id))["status"]["runs"][0]
    body, _ = await download.downloadArtifactToBuf(
        taskId=task_id, runId=0, name="public/logs/live_backing.log", queueService=queue
    )
    data = bytes(body)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return task_id, status, data.decode()


async def test_stops_run_in_reverse_and_a_failed_start_still_stops(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    events: list[str] = []
    features: list[Feature] = [
        Recorder("a", events),
        Recorder("b", events, fail_start=MalformedPayload("b cannot start")),
        Recorder("c", events),
        CommandExecutorFeature(),
    ]
    _, status, log = await run_task(platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features)
    assert events == ["start a", "start b", "stop b", "stop a"]
    assert (status["state"], status.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "[taskcluster:error] b cannot start" in log
    assert "Executing command" not in log


async def test_every_stop_runs_and_the_first_error_decides(platform: RunningPlatform, tmp_path: Path) -> None:
    events: list[str] = []
    features: list[Feature] = [
        Recorder("a", events, fail_stop=MalformedPayload("a stop")),
        Recorder("b", events, fail_stop=TaskFailed("b stop")),
        CommandExecutorFeature(),
    ]
    _, status, log = await run_task(platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features)
    assert events == ["start a", "start b", "stop b", "stop a"]
    assert status["state"] == "failed"  # b's stop error came first
    assert "Exit Code: 0" in log


async def test_disabled_feature_is_malformed_and_names_the_pool(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    events: list[str] = []
    features: list[Feature] = [Recorder("fancy", events, gate=False), CommandExecutorFeature()]
    _, status, log = await run_task(platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features)
    assert status.get("reasonResolved") == "malformed-payload"
    assert "fancy feature, which is not enabled on worker pool unit-prov/pipeline" in log
    assert events == []


async def test_missing_scopes_are_listed(platform: RunningPlatform, tmp_path: Path) -> None:
    features: list[Feature] = [Recorder("s", [], scopes=["needs:this/scope"]), CommandExecutorFeature()]
    _, status, log = await run_task(
        platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features, scopes=["needs:other"]
    )
    assert status.get("reasonResolved") == "malformed-payload"
    assert "needs:this/scope" in log


async def test_granted_scopes_pass(platform: RunningPlatform, tmp_path: Path) -> None:
    features: list[Feature] = [Recorder("s", [], scopes=["needs:this/scope"]), CommandExecutorFeature()]
    _, status, _ = await run_task(
        platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features, scopes=["needs:this/*"]
    )
    assert status["state"] == "completed"


async def test_two_features_reserving_one_name_is_malformed(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    features: list[Feature] = [
        Recorder("x", [], reserved=["public/thing"]),
        Recorder("y", [], reserved=["public/thing"]),
        CommandExecutorFeature(),
    ]
    _, status, log = await run_task(platform, tmp_path, {"command": [["true"]], "maxRunTime": 10}, features)
    assert status.get("reasonResolved") == "malformed-payload"
    assert "reserved by both x and y" in log


async def test_max_run_time_above_pool_limit_is_malformed_with_generic_workers_message(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    _, status, log = await run_task(
        platform, tmp_path, {"command": [["true"]], "maxRunTime": 90000}, load_features()
    )
    assert status.get("reasonResolved") == "malformed-payload"
    assert "task's maxRunTime of 90000 exceeded allowed maximum of 86400" in log


async def test_unimplemented_toggles_are_named(platform: RunningPlatform, tmp_path: Path) -> None:
    payload = {"command": [["true"]], "maxRunTime": 10, "features": {"loopbackAudio": True}}
    _, status, log = await run_task(platform, tmp_path, payload, load_features())
    assert status.get("reasonResolved") == "malformed-payload"
    assert "loopbackAudio" in log


async def test_docker_payload_on_simple_engine_explains_the_engine(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    payload = {"image": "ubuntu:22.04", "command": ["true"], "maxRunTime": 10}
    _, status, log = await run_task(platform, tmp_path, payload, load_features())
    assert status.get("reasonResolved") == "malformed-payload"
    assert "runs the simple engine" in log


def test_feature_order_invariants() -> None:
    names = [f.name for f in load_features()]
    assert names[-1] == "commandExecutor"
    assert names[-2] == "maxRunTime"
    assert names.index("artifacts") < names.index("maxRunTime")
    assert names.index("mounts") < names.index("artifacts")  # caches go back after artifacts are read
    assert len(set(names)) == len(names)
