"""Mounts on the multiuser engine (owned by the task user, other caches out of reach) and on the
docker engine (a generic-worker payload sees its mounts inside the container)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ci import require_multiuser_host, skip_or_fail
from helpers.mounts import archive, b64

SCOPES = ["generic-worker:cache:*"]


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory task users can traverse (pytest's tmp dirs are 0700)."""
    require_multiuser_host("the multiuser mounts tests")
    root = Path(tempfile.mkdtemp(prefix="tcw-mounts-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_multiuser_task_user_owns_its_mounts_and_cannot_reach_other_caches(
    start_worker, submitter, open_root
) -> None:
    worker = start_worker(
        workdir=open_root / "w",
        engine="multiuser",
        headlessTasks=True,
        capacity=2,
        tasksDir=str(open_root / "tasks"),
    )
    caches_dir = worker.config["cachesDir"]
    mounts = [
        {"directory": "cache", "cacheName": "mu"},
        {
            "directory": "ro",
            "content": b64(archive("tar.gz", [("sub/f.txt", b"ro")], open_root)),
            "format": "tar.gz",
        },
        {"file": "file.txt", "content": {"raw": "file"}},
    ]
    script = (
        'set -e; for p in cache ro ro/sub ro/sub/f.txt file.txt; do test "$(stat -c %U $p)" = "$USER" || '
        '{ echo "NOT-OWNED $p $(stat -c %U $p)"; exit 1; }; done; echo mine > cache/x; '
        f"if ls {caches_dir} 2>/dev/null; then echo REACHED-CACHES; exit 1; fi; "
        'for d in ../task_*; do [ "$d" = "../$(basename $PWD)" ] && continue; if ls "$d" 2>/dev/null; then echo "REACHED $d"; exit 1; fi; done; '
        "sleep 3; echo OWNED-OK"
    )
    a = submitter.create(
        {"command": [["/bin/sh", "-c", script]], "maxRunTime": 60, "mounts": mounts}, scopes=SCOPES
    )
    b = submitter.create(
        {"command": [["/bin/sh", "-c", script]], "maxRunTime": 60, "mounts": mounts}, scopes=SCOPES
    )
    for task_id in (a, b):
        run = submitter.wait_run(task_id, worker=worker, timeout=90)
        log = submitter.log(task_id)
        assert run["state"] == "completed", log
        assert "OWNED-OK" in log
    # A target the task user may not create (under a root-only directory) fails the task.
    bad = submitter.create(
        {
            "command": [["true"]],
            "maxRunTime": 30,
            "mounts": [{"directory": "/root/forbidden-cache", "cacheName": "mu"}],
        },
        scopes=SCOPES,
    )
    assert submitter.wait_run(bad, worker=worker)["state"] == "failed"
    assert not Path("/root/forbidden-cache").exists()


def test_docker_engine_generic_payload_sees_its_mounts(start_worker, submitter, tmp_path) -> None:
    try:
        import docker
        from helpers.dockerimage import TEST_IMAGE, import_image

        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001
        skip_or_fail(f"the docker engine test needs a running Docker daemon: {e}")
        return
    import_image(client, TEST_IMAGE)
    worker = start_worker(engine="docker", dockerImage=TEST_IMAGE)
    mounts = [
        {"directory": "cache", "cacheName": "dk"},
        {
            "directory": "ro",
            "content": b64(archive("tar.gz", [("f.txt", b"in-container")], tmp_path)),
            "format": "tar.gz",
        },
        {"file": "file.txt", "content": {"raw": "file-in-container"}},
    ]
    script = "cat ro/f.txt file.txt; echo; echo >> cache/count; echo COUNT=$(wc -l < cache/count)"
    for expected in ("1", "2"):
        task_id = submitter.create(
            {"command": [["/bin/sh", "-c", script]], "maxRunTime": 60, "mounts": mounts}, scopes=SCOPES
        )
        run = submitter.wait_run(task_id, worker=worker, timeout=120)
        log = submitter.log(task_id)
        assert run["state"] == "completed", log
        assert "in-container" in log and "file-in-container" in log
        assert f"COUNT={expected}" in log
