"""Object uploads with ``Content-Encoding: gzip``: compress to a temp file, PUT it, record plain hashes.

The official ``taskcluster.aio.upload`` helper hashes the bytes it sends, while downloaders
(``taskcluster.download``, browsers) decode gzip and check the *decoded* bytes, and the object
protocol has no field for an encoding. So for gzip artifacts the worker drives the object
protocol's ``putUrl`` method itself: the file is compressed to a temporary file in one streamed
pass that also hashes the original bytes (off the event loop), the compressed file is streamed to
the PUT URL with the service's headers plus ``Content-Encoding: gzip``, and ``finishUpload``
records the hashes of the uncompressed content. S3/GCS-backed object services store that header
and serve it back; the local platform does the same.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHUNK = 1 << 20


def compress(source: Path, tmp_dir: Path | None) -> tuple[Path, dict[str, str]]:
    """Gzip ``source`` into a new temp file; returns it and the sha256/sha512 of the *original*."""
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    fd, name = tempfile.mkstemp(prefix="gzip-", suffix=".gz", dir=tmp_dir)
    target = Path(name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out,
        ):
            with open(source, "rb") as f:
                while chunk := f.read(CHUNK):
                    sha256.update(chunk)
                    sha512.update(chunk)
                    out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, {"sha256": sha256.hexdigest(), "sha512": sha512.hexdigest()}


async def _body(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, 64 * 1024):
            yield chunk
    finally:
        f.close()


async def upload_gzip(
    *,
    session: aiohttp.ClientSession,
    object_service: Any,
    project_id: str,
    name: str,
    upload_id: str,
    expires: str,
    content_type: str,
    source: Path,
    tmp_dir: Path | None = None,
) -> None:
    """createUpload (putUrl) → PUT gzip bytes with ``Content-Encoding: gzip`` → finishUpload."""
    packed, hashes = await asyncio.to_thread(compress, source, tmp_dir)
    try:
        size = packed.stat().st_size
        resp = await object_service.createUpload(
            name,
            {
                "projectId": project_id,
                "uploadId": upload_id,
                "expires": expires,
                "proposedUploadMethods": {"putUrl": {"contentType": content_type, "contentLength": size}},
            },
        )
        method = resp.get("uploadMethod", {}).get("putUrl")
        if not method:
            raise RuntimeError(
                f"object service offered no putUrl upload for {name}: {resp.get('uploadMethod')}"
            )
        headers = {**method["headers"], "Content-Encoding": "gzip"}
        headers.setdefault("Content-Length", str(size))
        async with session.put(method["url"], data=_body(packed), headers=headers) as put:
            put.raise_for_status()
        await object_service.finishUpload(
            name, {"projectId": project_id, "uploadId": upload_id, "hashes": hashes}
        )
    finally:
        await asyncio.to_thread(packed.unlink, True)
