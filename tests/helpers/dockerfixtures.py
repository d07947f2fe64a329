"""The ``docker_client`` and ``test_image`` fixtures, shared by every test area that needs dockerd.

``docker_client`` makes sure a Docker daemon answers: when it does not and we are root, it runs
``.ci/docker-setup.sh`` (which starts dockerd) once. Without a daemon every docker test is skipped
with the reason, except under ``CI=true``, where that is a failure (``helpers.ci.skip_or_fail``).
Registered for the whole suite by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from helpers.ci import skip_or_fail
from helpers.dockerimage import TEST_IMAGE, busybox_path, import_image

SETUP_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "docker-setup.sh"


def _ping() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except docker.errors.DockerException:
        return None


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = _ping()
    if client is None and os.geteuid() == 0 and SETUP_SCRIPT.exists():
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=False, timeout=180, capture_output=True)
        client = _ping()
    if client is None:
        skip_or_fail("no Docker daemon answers (run .ci/docker-setup.sh as root to start one)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    """``tcworker-test/busybox:latest``, imported from busybox-static when missing; returns its id."""
    try:
        return str(docker_client.images.get(TEST_IMAGE).id)
    except docker.errors.ImageNotFound:
        pass
    if busybox_path() is None:
        skip_or_fail("busybox-static is not installed, so the test image cannot be built")
    return import_image(docker_client, TEST_IMAGE)
