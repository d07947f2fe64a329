"""``dockerSave``'s image: a committed container as a ``docker save`` tarball (docker-worker's
``public/dockerImage.tar``, spec/worker.md §3.6).

The image tarball is what a later task's ``task-image`` loads, so it is saved with its
repository tag (``docker save`` of the name, not of the bare id).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import docker
import docker.errors

from tcworker.engines.base import ArtifactFile
from tcworker.errors import InternalError


async def save_container(
    client: docker.DockerClient, container: Any, repository: str, dest: Path
) -> ArtifactFile:
    """``docker commit`` the container as ``<repository>:latest`` and ``docker save`` it to ``dest``."""
    try:
        image = await asyncio.to_thread(container.commit, repository=repository, tag="latest")
        await asyncio.to_thread(_write_save, client, f"{repository}:latest", dest)
    except docker.errors.APIError as e:
        raise InternalError(f"dockerSave: saving the container as {repository}:latest failed: {e}") from e
    del image
    size = (await asyncio.to_thread(dest.stat)).st_size
    return ArtifactFile(relative_name="", path=dest, size=size)


def _write_save(client: docker.DockerClient, name: str, dest: Path) -> None:
    chunks = client.api.get_image(name)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
