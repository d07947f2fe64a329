"""Acceptance (issue 2, item 2, faults): `kill -9` of the server loses nothing.

Between claim and report (the task, its claim, its artifacts and the run's credentials survive a
restart on the same data dir and port), and during a burst of createTask calls (every task the
server acknowledged with 200 is there after the restart).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import slugid
import taskcluster
import taskcluster.aio
from helpers.platformapi import (
    check_schema,
    check_status,
    claim_task,
    create_task,
    download,
    run_queue,
    upload_artifact,
)
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now, new_queue_id, task_def

pytestmark = pytest.mark.slow


def test_kill9_between_claim_and_report(platform: PlatformProcess) -> None:
    queue = platform.queue(maxRetries=0)
    q = new_queue_id()
    task_id, _ = create_task(queue, q, retries=0, scopes=["tcw-test:kept"])
    c = claim_task(queue, q, task_id)
    data = os.urandom(300_000)
    upload_artifact(
        platform, c["credentials"], task_id, 0, "public/before.bin", data, "application/octet-stream"
    )
    upload_artifact(platform, c["credentials"], task_id, 0, "private/small.txt", b"small", "text/plain")
    rq = run_queue(platform, c)
    rq.createArtifact(
        task_id,
        0,
        "public/ref",
        {
            "storageType": "reference",
            "url": "https://example.com/r",
            "contentType": "text/plain",
            "expires": from_now(days=1),
        },
    )
    reclaimed = check_schema(rq.reclaimTask(task_id, 0), "task-reclaim-response")
    before = (queue.task(task_id), queue.status(task_id), queue.listArtifacts(task_id, 0))
    root_url, pid = platform.root_url, platform.pid

    platform.kill9()
    assert not platform.running
    platform.start()
    assert platform.root_url == root_url and platform.pid != pid

    queue = platform.queue(maxRetries=0)
    after = (queue.task(task_id), queue.status(task_id), queue.listArtifacts(task_id, 0))
    assert after == before
    assert after[1]["status"]["state"] == "running"
    assert download(queue, task_id, "public/before.bin", 0)[0] == data
    assert download(platform.queue(None, maxRetries=0), task_id, "public/before.bin", 0)[0] == data
    assert download(queue, task_id, "private/small.txt", 0)[0] == b"small"

    # credentials issued before the crash still work, and so do fresh ones
    rq = run_queue(platform, reclaimed)
    again = check_schema(rq.reclaimTask(task_id, 0), "task-reclaim-response")
    upload_artifact(platform, again["credentials"], task_id, 0, "public/after.txt", b"after restart")
    status = check_status(run_queue(platform, again).reportCompleted(task_id, 0))
    assert status["state"] == "completed"
    names = {a["name"] for a in queue.listArtifacts(task_id, 0)["artifacts"]}
    assert names == {"public/before.bin", "private/small.txt", "public/ref", "public/after.txt"}


async def test_kill9_during_create_burst_loses_no_acknowledged_task(platform: PlatformProcess) -> None:
    q = new_queue_id()
    acked: dict[str, dict[str, Any]] = {}
    attempted: set[str] = set()
    killed = asyncio.Event()

    async with taskcluster.aio.createSession() as session:
        client = taskcluster.aio.Queue(platform.options(maxRetries=0), session=session)

        async def creator() -> None:
            while True:
                task_id = slugid.nice()
                body = task_def(q, payload={"n": len(attempted)})
                attempted.add(task_id)
                try:
                    await client.createTask(task_id, body)
                except Exception:  # connection reset / refused once the server is gone
                    if killed.is_set():
                        return
                    raise
                acked[task_id] = body

        async def killer() -> None:
            while len(acked) < 150:
                await asyncio.sleep(0.005)
            platform.kill9()
            killed.set()

        await asyncio.wait_for(asyncio.gather(killer(), *(creator() for _ in range(12))), timeout=120)

    assert len(acked) >= 150
    platform.start()
    queue = platform.queue(maxRetries=0)
    missing = []
    for task_id, body in acked.items():
        try:
            task = queue.task(task_id)
        except taskcluster.TaskclusterRestFailure:
            missing.append(task_id)
            continue
        assert task["payload"] == body["payload"]
        assert queue.status(task_id)["status"]["state"] == "pending"
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged tasks lost after kill -9"
    # tasks that were in flight are either fully there or absent, never half-written
    for task_id in attempted - set(acked):
        try:
            check_status(queue.status(task_id))
            check_schema(queue.task(task_id), "task")
        except taskcluster.TaskclusterRestFailure as exc:
            assert exc.status_code == 404
    print(f"{len(acked)} acknowledged, {len(attempted) - len(acked)} in flight at kill -9")
    pending = queue.pendingTasks(q)["pendingTasks"]
    assert pending >= len(acked), (pending, len(acked))
