"""``public/logs/certified.log``: the task log as it stood when the run was certified.

generic-worker copies the backing log when its chain-of-trust feature stops — after the commands
and ``=== Task Finished ===``, before the worker's closing lines — and publishes the copy so that
the signed document can vouch for the log (the backing log itself is uploaded later and never
listed). Shared by ``chainOfTrust`` and ``generateCertificate``; whichever stops first publishes it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

CERTIFIED_LOG = "public/logs/certified.log"


def content_type(docker_payload: bool) -> str:
    """generic-worker: ``text/plain; charset=utf-8``; docker-worker: ``text/plain`` (both gzip)."""
    return "text/plain" if docker_payload else "text/plain; charset=utf-8"


async def publish(
    publisher: Any, log_path: Path, scratch_dir: Path, expires: str, docker_payload: bool
) -> None:
    """Copy the log now and upload the copy (gzip-encoded; its plain sha256 is recorded)."""
    if CERTIFIED_LOG in publisher.uploaded_sha256:
        return
    copy = scratch_dir / "certified.log"
    await asyncio.to_thread(shutil.copyfile, log_path, copy)
    try:
        await publisher.upload_file(CERTIFIED_LOG, copy, content_type(docker_payload), expires, "gzip")
    finally:
        await asyncio.to_thread(copy.unlink, True)
