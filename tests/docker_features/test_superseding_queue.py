"""Superseding end to end against the local platform (``tcworker queue serve``) and a superseder
service on 127.0.0.1, through the official ``taskcluster`` client, as the worker core drives it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import slugid
import taskcluster
import taskcluster.aio
import taskcluster.aio.download
from helpers.logs import LineLog
from helpers.superseding import WORKER, WORKER_GROUP, RejectSupersededProxy, Superseder
from helpers.tasks import from_now, new_queue_id, task_def
from taskcluster.exceptions import TaskclusterRestFailure

from tcworker.features.superseding import JSON, SUPERSEDED_BY, SUPERSEDES, Plan, Superseding
from tcworker.tcapi.clients import Clients
from tcworker.tcapi.upload import ArtifactPublisher

WORKER_ID = "sup-worker-1"


def aio_queue(root_url: str, credentials: dict[str, str] | None) -> Any:
    opts: dict[str, Any] = {"rootUrl": root_url}
    if credentials:
        opts["credentials"] = dict(credentials)  # the client converts the dict's values to bytes in place
    return taskcluster.aio.Queue(opts)


class World:
    """One test's queue, tasks and superseder key."""

    def __init__(
        self, root_url: str, root: dict[str, str], superseder: Superseder, worker_creds: dict[str, str]
    ) -> None:
        self.root_url = root_url
        self.admin = aio_queue(root_url, root)
        self.worker = aio_queue(root_url, worker_creds)
        self.worker_clients = Clients(root_url, worker_creds)
        self.queue_id = new_queue_id("tcw-sup")
        self.key = slugid.nice()
        self.superseder = superseder

    async def create(self, queue_id: str | None = None, **payload_extra: Any) -> str:
        task_id = slugid.nice()
        payload = {
            "image": "busybox",
            "maxRunTime": 30,
            "supersederUrl": self.superseder.url(self.key),
            **payload_extra,
        }
        await self.admin.createTask(task_id, task_def(queue_id or self.queue_id, payload, expires=from_now(days=1)))
        return task_id

    async def claim_work(self) -> dict[str, Any]:
        resp = await self.worker.claimWork(
            self.queue_id, {"workerGroup": WORKER_GROUP, "workerId": WORKER_ID, "tasks": 1}
        )
        assert len(resp["tasks"]) == 1, resp
        return resp["tasks"][0]

    def superseding(self, **kw: Any) -> Superseding:
        return Superseding(self.worker_clients, WORKER_GROUP, WORKER_ID, task_queue_id=self.queue_id, **kw)

    async def runs(self, task_id: str) -> list[tuple[str, str | None]]:
        status = (await self.admin.status(task_id))["status"]
        return [(r["state"], r.get("reasonResolved")) for r in status["runs"]]

    async def artifact_json(self, task_id: str, run_id: int, name: str) -> Any:
        buf, content_type = await taskcluster.aio.download.downloadArtifactToBuf(
            taskId=task_id, runId=run_id, name=name, queueService=self.admin
        )
        assert content_type.startswith("application/json")
        return json.loads(bytes(buf))

    async def artifact_names(self, task_id: str, run_id: int) -> list[str]:
        return [a["name"] for a in (await self.admin.listArtifacts(task_id, str(run_id)))["artifacts"]]

    async def complete_primary(self, plan: Plan, staging: Path) -> None:
        """What the worker core does for the primary: upload supersedes.json, then reportCompleted."""
        primary_queue = aio_queue(self.root_url, plan.primary["credentials"])
        assert plan.superseding
        publisher = ArtifactPublisher(
            self.worker_clients, lambda: primary_queue, plan.primary_task_id, plan.primary_run_id
        )
        await publisher.upload_bytes(
            SUPERSEDES, plan.supersedes_document(), JSON, plan.primary["task"]["expires"]
        )
        await primary_queue.reportCompleted(plan.primary_task_id, str(plan.primary_run_id))


@pytest.fixture
def world(sup_platform: Any, superseder: Superseder) -> World:
    return World(sup_platform.root_url, sup_platform.root_credentials, superseder, WORKER)


async def test_primary_runs_and_secondaries_are_superseded(world: World, tmp_path: Path) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    assert claim["status"]["taskId"] == claimed
    newer, older = await world.create(), await world.create()
    world.superseder.lists[world.key] = [newer, claimed, older]
    log = LineLog()
    sup = world.superseding()

    plan = await sup.plan(claim, log=log)
    assert world.superseder.requests == [(world.key, {"taskId": claimed})]
    assert plan.primary_task_id == newer and plan.primary_run_id == 0
    assert plan.primary["task"]["payload"]["supersederUrl"] == world.superseder.url(world.key)
    assert [(s.task_id, s.run_id) for s in plan.secondaries] == [(claimed, 0), (older, 0)]
    for tid in (newer, claimed, older):
        status = (await world.admin.status(tid))["status"]
        assert status["runs"][0]["state"] == "running" and status["runs"][0]["workerId"] == WORKER_ID
    assert any(f"running {newer} run 0, superseding {claimed}/0, {older}/0" in n for n in plan.notes)

    await world.complete_primary(plan, tmp_path)
    await sup.finish(plan, True, log=log)
    await sup.finish(plan, True, log=log)  # idempotent

    assert await world.runs(newer) == [("completed", "completed")]
    assert await world.artifact_json(newer, 0, SUPERSEDES) == [
        {"taskId": claimed, "runId": 0},
        {"taskId": older, "runId": 0},
    ]
    for tid in (claimed, older):
        assert await world.runs(tid) == [("exception", "superseded")], log.text()
        assert await world.artifact_json(tid, 0, SUPERSEDED_BY) == {"taskId": newer, "runId": 0}


async def test_primary_aborted_secondaries_are_given_back(world: World) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    newer = await world.create()
    world.superseder.lists[world.key] = [newer, claimed]
    sup = world.superseding()
    plan = await sup.plan(claim)
    assert plan.primary_task_id == newer
    await aio_queue(world.root_url, plan.primary["credentials"]).reportException(
        newer, "0", {"reason": "worker-shutdown"}
    )
    await sup.finish(plan, False)
    runs = await world.runs(claimed)
    assert runs[0] == ("exception", "worker-shutdown") and runs[1][0] == "pending"  # retried by the queue
    assert await world.artifact_names(claimed, 0) == []


async def test_claimed_task_first_in_list_is_primary(world: World, tmp_path: Path) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    older = await world.create()
    world.superseder.lists[world.key] = [claimed, older]
    sup = world.superseding()
    plan = await sup.plan(claim)
    assert plan.primary["status"]["taskId"] == claimed
    assert plan.primary["credentials"] == claim["credentials"]
    assert [s.task_id for s in plan.secondaries] == [older]
    await world.complete_primary(plan, tmp_path)
    await sup.finish(plan, True)
    assert await world.runs(older) == [("exception", "superseded")]


async def test_tasks_that_cannot_be_claimed_are_skipped(world: World) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    unknown = slugid.nice()  # never created
    done = await world.create()
    await world.admin.cancelTask(done)  # resolved: run 0 cannot be claimed
    other_queue = await world.create(queue_id="tcw-other/elsewhere")  # the worker lacks claim-task there
    older = await world.create()
    world.superseder.lists[world.key] = [unknown, done, other_queue, claimed, older]
    log = LineLog()
    sup = world.superseding()
    plan = await sup.plan(claim, log=log)
    assert plan.primary_task_id == claimed
    assert [s.task_id for s in plan.secondaries] == [older]
    text = log.text()
    for tid in (unknown, done, other_queue):
        assert f"could not claim {tid} run 0" in text
    assert (await world.runs(other_queue)) == [("pending", None)]
    await sup.finish(plan, False)
    assert (await world.runs(older))[0] == ("exception", "worker-shutdown")


async def test_task_of_another_queue_is_given_back(sup_platform: Any, superseder: Superseder) -> None:
    """With over-broad (root) worker credentials the queue lets us claim anything; the plan must not
    run a task of another pool."""
    world = World(
        sup_platform.root_url, sup_platform.root_credentials, superseder, sup_platform.root_credentials
    )
    claimed = await world.create()
    claim = await world.claim_work()
    foreign = await world.create(queue_id=new_queue_id("tcw-sup"))
    world.superseder.lists[world.key] = [foreign, claimed]
    log = LineLog()
    sup = world.superseding()
    plan = await sup.plan(claim, log=log)
    assert plan.primary_task_id == claimed and not plan.superseding
    assert "belongs to task queue" in log.text()
    runs = await world.runs(foreign)
    assert runs[0] == ("exception", "worker-shutdown") and runs[1][0] == "pending"
    await sup.finish(plan, True)


async def test_unlisted_claimed_task_runs_normally(world: World) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    assert claim["status"]["taskId"] == claimed
    a, b = await world.create(), await world.create()
    world.superseder.lists[world.key] = [a, b]
    log = LineLog()
    plan = await world.superseding().plan(claim, log=log)
    assert plan.primary == claim and not plan.superseding
    assert "did not list this task" in log.text()
    assert await world.runs(a) == [("pending", None)] and await world.runs(b) == [("pending", None)]


async def test_superseder_down_runs_normally(world: World) -> None:
    claimed = await world.create()
    claim = await world.claim_work()
    claim["task"]["payload"]["supersederUrl"] = world.superseder.url("status500")
    log = LineLog()
    plan = await world.superseding().plan(claim, log=log)
    assert plan.primary == claim and not plan.superseding
    assert "HTTP 500" in log.text()
    assert any("HTTP 500" in n for n in plan.notes)
    assert claimed == plan.primary_task_id


async def test_secondary_claims_are_kept_alive(tmp_path: Path, superseder: Superseder) -> None:
    """With a 4 s claim timeout the secondary would expire within the test; the reclaim loop keeps it."""
    from helpers.platformproc import PlatformProcess

    from tcworker.tctime import parse

    proc = PlatformProcess(
        tmp_path / "short-claims", claim_timeout=4, clients=[{**WORKER, "scopes": ["*"]}]
    ).start()
    try:
        world = World(proc.root_url, proc.root_credentials, superseder, WORKER)
        claimed = await world.create()
        claim = await world.claim_work()
        older = await world.create()
        world.superseder.lists[world.key] = [claimed, older]
        sup = world.superseding()
        plan = await sup.plan(claim)
        first_until = parse(plan.secondaries[0].claim["takenUntil"])
        await asyncio.sleep(7)
        status = (await world.admin.status(older))["status"]
        assert [r["state"] for r in status["runs"]] == ["running"], status
        assert parse(status["runs"][0]["takenUntil"]) > first_until
        assert parse(plan.secondaries[0].claim["takenUntil"]) > first_until
        await sup.finish(plan, False)
        assert (await world.runs(older))[0] == ("exception", "worker-shutdown")
    finally:
        proc.stop()


async def test_real_queue_400_falls_back_to_cancel(
    sup_platform: Any, superseder: Superseder, reject_proxy: RejectSupersededProxy, tmp_path: Path
) -> None:
    """Against a queue without ``superseded`` the log says so and a worker allowed to cancel cancels."""
    world = World(
        reject_proxy.root_url, sup_platform.root_credentials, superseder, sup_platform.root_credentials
    )
    claimed = await world.create()
    claim = await world.claim_work()
    newer = await world.create()
    world.superseder.lists[world.key] = [newer, claimed]
    log = LineLog()
    sup = world.superseding()
    plan = await sup.plan(claim, log=log)
    await world.complete_primary(plan, tmp_path)
    await sup.finish(plan, True, log=log)
    assert reject_proxy.rejected == [f"/api/queue/v1/task/{claimed}/runs/0/exception"]
    assert "no longer accepts exception reason 'superseded'" in log.text()
    assert await world.runs(claimed) == [("exception", "canceled")]
    assert await world.artifact_json(claimed, 0, SUPERSEDED_BY) == {"taskId": newer, "runId": 0}


async def test_real_queue_400_without_cancel_scope_leaves_the_claim_to_expire(
    sup_platform: Any, superseder: Superseder, reject_proxy: RejectSupersededProxy, tmp_path: Path
) -> None:
    world = World(reject_proxy.root_url, sup_platform.root_credentials, superseder, WORKER)
    claimed = await world.create()
    claim = await world.claim_work()
    newer = await world.create()
    world.superseder.lists[world.key] = [newer, claimed]
    log = LineLog()
    sup = world.superseding()
    plan = await sup.plan(claim, log=log)
    await world.complete_primary(plan, tmp_path)
    await sup.finish(plan, True, log=log)
    text = log.text()
    assert "no longer accepts exception reason 'superseded'" in text
    assert f"could not cancel {claimed} either" in text and "will expire" in text
    assert await world.runs(claimed) == [("running", None)]
    assert await world.artifact_json(claimed, 0, SUPERSEDED_BY) == {"taskId": newer, "runId": 0}
    with pytest.raises(TaskclusterRestFailure):
        await world.worker.cancelTask(claimed)
