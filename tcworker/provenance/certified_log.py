"""``public/logs/certified.log``: the task log as it stood when the run was certified.

generic-worker copies the backing log when its chain-of-trust feature stops — after the commands
and ``=== Task Finished ===``, before the worker's closing lines — and publishes the copy so that
the signed document can vouch for the log (the backing log itself is uploaded later and never
listed). The copy is hashed while it is made, so the certificate can be signed while the copy is
still uploading. Shared by ``chainOfTrust`` and ``generateCertificate``; whichever stops first
publishes it.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

CERTIFIED_LOG = "public/logs/certified.log"
CHUNK = 1 << 20


def content_type(docker_payload: bool) -> str:
    """generic-worker: ``text/plain; charset=utf-8``; docker-worker: ``text/plain`` (both gzip)."""
    return "text/plain" if docker_payload else "text/plain; charset=utf-8"


def _copy_and_hash(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


async def snapshot(log_path: Path, scratch_dir: Path) -> tuple[Path, str]:
    """Copy the log as it is now; returns the copy and the sha256 of its bytes."""
    copy = scratch_dir / "certified.log"
    digest = await asyncio.to_thread(_copy_and_hash, log_path, copy)
    return copy, digest


async def upload(publisher: Any, copy: Path, expires: str, docker_payload: bool) -> None:
    """Upload a snapshot (gzip-encoded), then drop the copy."""
    try:
        await publisher.upload_file(CERTIFIED_LOG, copy, content_type(docker_payload), expires, "gzip")
    finally:
        await asyncio.to_thread(copy.unlink, True)


async def publish(
    publisher: Any, log_path: Path, scratch_dir: Path, expires: str, docker_payload: bool
) -> None:
    """Snapshot and upload, unless already published for this run."""
    if CERTIFIED_LOG in publisher.uploaded_sha256:
        return
    copy, _ = await snapshot(log_path, scratch_dir)
    await upload(publisher, copy, expires, docker_payload)
