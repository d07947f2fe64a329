"""End to end against a real `tcworker queue serve` process with the official client (sync and aio).

The issue-2 acceptance path in one place: create → claim → reclaim → resolve, an object artifact
uploaded with taskcluster.upload and read back with taskcluster.download (with and without
credentials), and task credentials that work for their own run but get 403 elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import slugid
import taskcluster
import taskcluster.aio
import taskcluster.aio.download
import taskcluster.aio.upload
import taskcluster.download
import taskcluster.upload
from helpers.tasks import from_now, task_def


def test_sync_client_full_run_with_object_artifact(platform: Any) -> None:
    queue = platform.queue(maxRetries=0)
    queue_id = f"smoke/{slugid.nice().lower().replace('_', 'x').replace('-', 'y')[:20]}"
    task_id, other_id = slugid.nice(), slugid.nice()
    assert queue.createTask(task_id, task_def(queue_id))["status"]["state"] == "pending"
    claim = queue.claimWork(queue_id, {"workerGroup": "wg", "workerId": "w1"})["tasks"][0]
    assert claim["status"]["taskId"] == task_id and claim["runId"] == 0
    run_queue = platform.queue(claim["credentials"], maxRetries=0)
    reclaimed = run_queue.reclaimTask(task_id, 0)
    run_queue = platform.queue(reclaimed["credentials"], maxRetries=0)

    art = run_queue.createArtifact(
        task_id,
        0,
        "public/data.bin",
        {"storageType": "object", "expires": from_now(days=1), "contentType": "application/x-test"},
    )
    data = bytes(range(256)) * 400  # > 8 KiB: goes through putUrl
    taskcluster.upload.uploadFromBuf(
        projectId=art["projectId"],
        name=art["name"],
        contentType="application/x-test",
        contentLength=len(data),
        expires=art["expires"],
        uploadId=art["uploadId"],
        objectService=taskcluster.Object({"rootUrl": platform.root_url, "credentials": art["credentials"]}),
        data=data,
    )
    run_queue.finishArtifact(task_id, 0, "public/data.bin", {"uploadId": art["uploadId"]})
    for reader in (queue, platform.queue(None)):
        got, content_type = taskcluster.download.downloadArtifactToBuf(
            taskId=task_id, name="public/data.bin", queueService=reader
        )
        assert bytes(got) == data and content_type == "application/x-test"

    queue.createTask(other_id, task_def(queue_id))
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        run_queue.reportCompleted(other_id, 0)
    assert exc.value.status_code == 403 and f"queue:resolve-task:{other_id}/0" in exc.value.body["message"]
    assert run_queue.reportCompleted(task_id, 0)["status"]["state"] == "completed"


@pytest.mark.parametrize("resolution", ["completed", "failed", "exception"])
async def test_aio_client_each_resolution(platform: Any, resolution: str) -> None:
    queue = taskcluster.aio.Queue(platform.options(maxRetries=0))
    queue_id = "smoke/aio-" + resolution[:4]
    task_id = slugid.nice()
    await queue.createTask(task_id, task_def(queue_id))
    claim = (await queue.claimWork(queue_id, {"workerGroup": "wg", "workerId": "w1", "tasks": 4}))["tasks"][0]
    run_queue = taskcluster.aio.Queue(platform.options(claim["credentials"], maxRetries=0))
    await run_queue.reclaimTask(task_id, 0)
    if resolution == "completed":
        status = await run_queue.reportCompleted(task_id, 0)
    elif resolution == "failed":
        status = await run_queue.reportFailed(task_id, 0)
    else:
        status = await run_queue.reportException(task_id, 0, {"reason": "malformed-payload"})
    assert status["status"]["state"] == resolution
    art = (
        await run_queue.createArtifact(
            task_id,
            0,
            "public/small.txt",
            {"storageType": "object", "expires": from_now(days=1), "contentType": "text/plain"},
        )
        if resolution == "exception"
        else None
    )
    if art is not None:  # artifacts stay open for 25 minutes after an exception
        await taskcluster.aio.upload.uploadFromBuf(
            projectId=art["projectId"],
            name=art["name"],
            contentType="text/plain",
            contentLength=2,
            expires=art["expires"],
            uploadId=art["uploadId"],
            objectService=taskcluster.aio.Object(
                {"rootUrl": platform.root_url, "credentials": art["credentials"]}
            ),
            data=b"ok",
        )
        await run_queue.finishArtifact(task_id, 0, "public/small.txt", {"uploadId": art["uploadId"]})
        got, _ = await taskcluster.aio.download.downloadArtifactToBuf(
            taskId=task_id,
            name="public/small.txt",
            queueService=taskcluster.aio.Queue({"rootUrl": platform.root_url}),
        )
        assert bytes(got) == b"ok"


def test_timestamps_fast_paths_agree_with_the_general_ones() -> None:
    """clock.json_ms and tctime.parse take shortcuts for the usual forms; the general paths decide."""
    import datetime as dt
    import random

    from tcworker import tctime
    from tcworker.platform.clock import from_ms, json_ms, parse_ms

    rng = random.Random(15)
    for ms in [0, 1, 999, 1_000, 86_399_999, 253_402_300_799_999] + [
        rng.randrange(0, 253_402_300_800_000) for _ in range(2000)
    ]:
        text = json_ms(ms)
        dt_value = from_ms(ms)
        assert text == dt_value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert parse_ms(text) == ms
    for text, expected in [
        ("2026-01-02T03:04:05.678Z", "2026-01-02T03:04:05.678Z"),
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02T03:04:05.6789+01:00", "2026-01-02T02:04:05.678Z"),
        ("2026-01-02t03:04:05.1z", "2026-01-02T03:04:05.100Z"),
    ]:
        assert tctime.normalise(text) == expected
        assert tctime.parse(text).tzinfo == dt.UTC
    for bad in ["2026-13-02T03:04:05.678Z", "2026-01-02T25:04:05.678Z"]:
        with pytest.raises(ValueError):
            tctime.parse(bad)
