"""Fixtures for the live-log tests: real platform, real `tcworker run` processes (tests/e2e harness),
real Docker for the docker-worker payload, real gpg for encryptedEnv.

The worker harness (tests/helpers/workerproc.py), the docker image helpers (tests/helpers/dockerimage.py)
and the gpg helpers (tests/helpers/gpg.py) are reused, not copied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers.workerproc import WorkerProcess

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(worker_factory: WorkerFactory) -> WorkerFactory:
    """``start_worker(rootURL=..., engine="docker", ...)``: see ``worker_factory``."""
    return worker_factory


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The busybox test image on a reachable Docker engine (tests/docker's helpers), or skip/fail."""
    import docker
    import docker.errors
    from helpers.ci import skip_or_fail
    from helpers.dockerimage import TEST_IMAGE, busybox_path, import_image

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException:
        skip_or_fail("no Docker daemon answers (run .ci/docker-setup.sh as root to start one)")
        raise
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        if busybox_path() is None:
            skip_or_fail("busybox-static is not installed, so the test image cannot be built")
        import_image(client, TEST_IMAGE)
    return TEST_IMAGE


@pytest.fixture(scope="session")
def gpg_key() -> Iterator[Any]:
    from helpers.gpg import make_gpg_key

    yield from make_gpg_key("future-default")
