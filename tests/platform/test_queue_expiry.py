"""Acceptance (issue 2, Storage): expired tasks, their artifacts and the objects' bytes are removed.

The expiry pass (``tcworker/platform/queue/resolvers.py``) runs once when the server starts and then
every 60 s. The test does not wait a minute: it lets a task expire, restarts the server on the same
data dir (a plain restart, no extra flag) and checks that the start-up pass removed the task, its
artifact and the object file under ``<data-dir>/objects/``, while a task that has not expired keeps
everything.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import slugid
import taskcluster
from helpers.platformapi import (
    check_status,
    claim,
    download,
    rest_error,
    run_queue,
    upload_artifact,
)
from helpers.platformproc import PlatformProcess
from helpers.polling import wait_for
from helpers.tasks import new_queue_id, task_def

ARTIFACT = "public/expiring.txt"


def _object_files(platform: PlatformProcess) -> set[Path]:
    root = platform.data_dir / "objects"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _gone(call: Callable[[], object]) -> bool:
    """True when ``call`` answers 404 (the resource no longer exists)."""
    try:
        call()
    except taskcluster.exceptions.TaskclusterRestFailure as exc:
        if exc.status_code == 404:
            return True
        raise
    return False


def test_expired_task_artifact_and_object_bytes_are_removed(
    platform_server: Callable[..., PlatformProcess],
) -> None:
    platform = platform_server()
    queue = platform.queue(maxRetries=0)
    q = new_queue_id()
    now = dt.datetime.now(dt.UTC)
    expires = taskcluster.stringDate(now + dt.timedelta(seconds=4))
    short = task_def(
        q, deadline=taskcluster.stringDate(now + dt.timedelta(seconds=3)), expires=expires, priority="high"
    )
    short_id, long_id = slugid.nice(), slugid.nice()
    check_status(queue.createTask(short_id, short))
    check_status(queue.createTask(long_id, task_def(q, priority="low")))

    claims = {c["status"]["taskId"]: c for c in claim(queue, q, tasks=2)}
    assert set(claims) == {short_id, long_id}
    before = _object_files(platform)
    for task_id, art_expires in ((short_id, expires), (long_id, None)):
        creds = claims[task_id]["credentials"]
        upload_artifact(
            platform, creds, task_id, 0, ARTIFACT, f"bytes of {task_id}".encode(), expires=art_expires
        )
        run_queue(platform, claims[task_id]).reportCompleted(task_id, "0")
    files = {p.read_bytes().decode(): p for p in _object_files(platform) - before}
    assert set(files) == {f"bytes of {short_id}", f"bytes of {long_id}"}, files
    assert download(queue, short_id, ARTIFACT, 0)[0] == f"bytes of {short_id}".encode()

    # Let the short task expire, then restart: the start-up expiry pass removes it.
    time.sleep(max(0.0, (now + dt.timedelta(seconds=5) - dt.datetime.now(dt.UTC)).total_seconds()))
    platform.restart()

    wait_for(
        lambda: _gone(lambda: queue.task(short_id)), timeout=10, what="queue.task of the expired task → 404"
    )
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        queue.status(short_id)
    rest_error(excinfo, 404, "ResourceNotFound")
    assert _gone(lambda: queue.listArtifacts(short_id, "0"))
    assert _gone(lambda: queue.artifact(short_id, "0", ARTIFACT))
    assert not files[f"bytes of {short_id}"].exists(), "the expired object's bytes are still on disk"
    obj = taskcluster.Object(platform.options(maxRetries=0))
    assert _gone(
        lambda: obj.startDownload(f"t/{short_id}/0/{ARTIFACT}", {"acceptDownloadMethods": {"simple": True}})
    )

    # The task that has not expired keeps its definition, artifact and bytes.
    assert queue.task(long_id)["taskQueueId"] == q
    assert queue.status(long_id)["status"]["state"] == "completed"
    assert download(queue, long_id, ARTIFACT, 0)[0] == f"bytes of {long_id}".encode()
    assert files[f"bytes of {long_id}"].exists()
