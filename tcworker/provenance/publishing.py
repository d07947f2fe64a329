"""Upload a document the worker made (certificate, signature, provenance) with a chosen encoding.

generic-worker publishes its chain-of-trust files gzip-encoded, docker-worker as they are. The
publisher's ``upload_bytes`` stores identity; for gzip the bytes go through a file in the run's
private scratch directory and ``upload_file``'s gzip path, which records the sha256 of the plain
bytes like every other upload.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any


async def publish_bytes(
    publisher: Any, scratch_dir: Path, name: str, data: bytes, content_type: str, expires: str, encoding: str
) -> None:
    if encoding != "gzip":
        await publisher.upload_bytes(name, data, content_type, expires)
        return

    def spill() -> Path:
        fd, tmp = tempfile.mkstemp(prefix="signed-", dir=scratch_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(tmp)

    path = await asyncio.to_thread(spill)
    try:
        await publisher.upload_file(name, path, content_type, expires, "gzip")
    finally:
        await asyncio.to_thread(path.unlink, True)
