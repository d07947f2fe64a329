"""Fixtures of the chain-of-trust tests: one worker per engine serves a whole module (each on its
own task queue of ``shared_platform``), built by ``cotpools``. The multiuser worker needs root; the
docker worker a Docker daemon and busybox-static: without them the tests skip locally and fail
under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ci import skip_or_fail
from helpers.cotpools import Pool, start_pool
from helpers.platformproc import PlatformProcess


@pytest.fixture(scope="module")
def host_root() -> Iterator[Path]:
    """A scratch root task users can traverse (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="tcw-cot-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mu_pool(host_root: Path, shared_platform: PlatformProcess) -> Iterator[Pool]:
    """A multiuser worker (capacity 1, so runTaskAsCurrentUser is available) with both keys."""
    if os.geteuid() != 0:
        skip_or_fail("the multiuser engine needs root")
    pool = start_pool(
        host_root,
        shared_platform,
        "multiuser",
        openpgp=True,
        engine="multiuser",
        tasksDir=str(host_root / "multiuser" / "tasks"),
        headlessTasks=True,
    )
    try:
        yield pool
    finally:
        pool.worker.stop()
        print(f"\n===== multiuser worker output (tail) =====\n{pool.worker.tail(8000)}")


@pytest.fixture(scope="module")
def docker_pool(host_root: Path, shared_platform: PlatformProcess) -> Iterator[Pool]:
    """A docker-engine worker with the busybox test image (docker-worker and generic payloads)."""
    import docker
    import docker.errors
    from helpers.dockerimage import TEST_IMAGE, busybox_path, import_image

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException:
        skip_or_fail("no Docker daemon answers (run .ci/docker-setup.sh as root to start one)")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        if busybox_path() is None:
            skip_or_fail("busybox-static is not installed, so the test image cannot be built")
        import_image(client, TEST_IMAGE)
    pool = start_pool(host_root, shared_platform, "docker", engine="docker", dockerImage=TEST_IMAGE)
    try:
        yield pool
    finally:
        pool.worker.stop()
        client.close()
        print(f"\n===== docker worker output (tail) =====\n{pool.worker.tail(8000)}")
