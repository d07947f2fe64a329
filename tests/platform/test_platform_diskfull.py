"""Issue 14: a full data disk is answered with its real cause, and the store stays consistent.

The platform runs with ``--data-dir`` on a real 16 MiB tmpfs mounted for this test (root only).
Once a filler file has taken every free block: writes (createTask, object data) answer
``507 InsufficientStorage`` in Taskcluster's error shape saying the data disk is full — not a bare
500 — reads keep working, no partial object file is left, and once space is freed the same calls
succeed and the database passes SQLite's integrity check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import slugid
import taskcluster
import taskcluster.upload
from helpers.ci import require_root
from helpers.platformapi import check_status, claim_task, create_task, download, rest_error
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now, new_queue_id, task_def


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted at a fresh directory, unmounted afterwards."""
    require_root("mounting a tmpfs for the full-disk test")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Write a filler file until the filesystem refuses another byte; returns it."""
    filler = disk / "filler"
    block = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    fh.write(block[:size])
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    return filler


def _disk_full_answer(excinfo: pytest.ExceptionInfo[taskcluster.TaskclusterRestFailure]) -> None:
    body = rest_error(excinfo, 507, "InsufficientStorage")
    assert "data disk is full" in body["message"], body["message"]


def test_full_data_disk_answers_507_and_keeps_the_store_consistent(small_disk: Path) -> None:
    platform = PlatformProcess(small_disk)
    platform.start()
    try:
        queue = platform.queue(maxRetries=0)
        queue_id = new_queue_id()
        task_a, _ = create_task(queue, queue_id)
        claimed = claim_task(queue, queue_id, task_a)
        run_queue = platform.queue(claimed["credentials"], maxRetries=0)
        art = run_queue.createArtifact(
            task_a,
            0,
            "public/data.bin",
            {"storageType": "object", "contentType": "application/octet-stream", "expires": from_now(days=1)},
        )
        art_obj = taskcluster.Object(platform.options(art["credentials"], maxRetries=0))
        data = os.urandom(1 << 20)

        def upload() -> None:
            taskcluster.upload.uploadFromBuf(
                projectId=art["projectId"],
                name=art["name"],
                contentType="application/octet-stream",
                contentLength=len(data),
                expires=art["expires"],
                uploadId=art["uploadId"],
                objectService=art_obj,
                maxRetries=0,
                data=data,
            )

        # The putUrl the official upload helper would PUT the data to (asked before the disk fills).
        put = art_obj.createUpload(
            art["name"],
            {
                "projectId": art["projectId"],
                "uploadId": art["uploadId"],
                "expires": art["expires"],
                "proposedUploadMethods": {
                    "putUrl": {"contentType": "application/octet-stream", "contentLength": len(data)}
                },
            },
        )["uploadMethod"]["putUrl"]

        filler = _fill(small_disk)

        task_b = slugid.nice()
        body_b = task_def(queue_id)
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            queue.createTask(task_b, body_b)
        _disk_full_answer(exc)
        answer = requests.put(put["url"], data=data, headers=put["headers"], timeout=60)
        assert answer.status_code == 507, answer.text[:500]
        assert answer.json()["code"] == "InsufficientStorage"
        assert "data disk is full" in answer.json()["message"]
        assert list((small_disk / "objects").glob("*/*.part-*")) == []
        # Reads still work while the disk is full.
        assert check_status(queue.status(task_a))["state"] == "running"
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            queue.status(task_b)
        rest_error(exc, 404)
        assert platform.running

        filler.unlink()
        check_status(queue.createTask(task_b, body_b))
        assert check_status(queue.status(task_b))["state"] == "pending"
        upload()
        run_queue.finishArtifact(task_a, 0, "public/data.bin", {"uploadId": art["uploadId"]})
        assert download(queue, task_a, "public/data.bin", 0)[0] == data
        assert check_status(run_queue.reportCompleted(task_a, 0))["state"] == "completed"
    finally:
        assert platform.stop() == 0, platform.output()[-3000:]
    with contextlib.closing(sqlite3.connect(small_disk / "platform.sqlite3")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "InternalServerError" not in platform.output()
