"""Disk GC on a small tmpfs: idle caches go least recently used first; nothing freeable → exit 69."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ci import require_root

SCOPES = ["generic-worker:cache:*"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    require_root("mounting a tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _dirs(fs: Path) -> dict[str, str]:
    return {
        "tasksDir": str(fs / "tasks"),
        "cachesDir": str(fs / "caches"),
        "downloadsDir": str(fs / "downloads"),
    }


def _fill(submitter, name: str) -> str:
    return submitter.create(
        {
            "command": [["/bin/sh", "-c", "head -c 20000000 /dev/zero > cache/blob"]],
            "maxRunTime": 60,
            "mounts": [{"directory": "cache", "cacheName": name}],
        },
        scopes=SCOPES,
    )


def test_gc_evicts_least_recently_used_cache_then_runs_the_task(
    start_worker, submitter, small_fs, tmp_path
) -> None:
    worker = start_worker(workdir=tmp_path / "w", requiredDiskSpaceMegabytes=1, **_dirs(small_fs))
    for name in ("old", "new"):
        assert submitter.wait_run(_fill(submitter, name), worker=worker)["state"] == "completed"
    worker.stop()
    free_mb = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize // (1 << 20)
    worker = start_worker(workdir=tmp_path / "w", requiredDiskSpaceMegabytes=free_mb + 5, **_dirs(small_fs))
    task_id = submitter.create({"command": [["true"]], "maxRunTime": 30})
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed"
    names = {p.name for p in (small_fs / "caches" / "generic-worker").iterdir() if any(p.iterdir())}
    assert names == {"new"}, f"expected only the least recently used cache evicted, left: {names}"
    assert "disk GC: evicted cache" in worker.output()


def test_nothing_to_free_exits_69(start_worker, small_fs, tmp_path) -> None:
    worker = start_worker(workdir=tmp_path / "w", requiredDiskSpaceMegabytes=100, **_dirs(small_fs))
    assert worker.wait(60) == 69
    assert "requiredDiskSpaceMegabytes is 100" in worker.output()
