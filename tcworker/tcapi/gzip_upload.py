"""Object uploads with ``Content-Encoding: gzip``: compress to a temp file, PUT it, record plain hashes.

The official ``taskcluster.aio.upload`` helper hashes the bytes it sends, while downloaders
(``taskcluster.download``, browsers) decode gzip and check the *decoded* bytes, and the object
protocol has no field for an encoding. So for gzip artifacts the worker drives the object
protocol's ``putUrl`` method itself: the file is compressed to a temporary file in one streamed
pass that also hashes the original bytes (off the event loop), the compressed file is streamed to
the PUT URL with the service's headers plus ``Content-Encoding: gzip``, and ``finishUpload``
records the hashes of the uncompressed content. S3/GCS-backed object services store that header
and serve it back; the local platform does the same. The task log's gzip copy is made while the
log is written (``logpack``), so publishing it after the command is only the PUT.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import aiohttp
from taskcluster.aio.retry import retry

from tcworker.digests import PlainDigests
from tcworker.tcapi.clients import RETRIES  # one retry policy: the official client's, with its helper

CHUNK = 4 << 20
ARTIFACT_LEVEL = 6  # zlib's default, as generic-worker's gzip writer
SMALL_BODY = 256 * 1024  # PUT from memory up to this size
LOG_LEVEL = 1  # task logs can be GiBs of text: level 1 is ~2.5× faster to write and to verify


class Packed(NamedTuple):
    """A gzip copy ready to PUT and the hashes of the *plain* bytes it decodes to."""

    path: Path
    hashes: dict[str, str]


class GzipHashWriter:
    """One pass over plain bytes that both gzips them into ``out`` and hashes them.

    ``zlib`` with ``wbits=31`` writes the gzip header (mtime 0) and CRC itself, avoiding
    ``GzipFile``'s extra CRC pass; both zlib and hashlib release the GIL on big chunks.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._digests = PlainDigests()

    def write(self, chunk: bytes) -> None:
        self._digests.update(chunk)  # hashed on the helper thread while deflate runs here
        self._out.write(self._zlib.compress(chunk))

    def finish(self) -> dict[str, str]:
        """Write the gzip trailer; returns the plain bytes' hashes."""
        self._out.write(self._zlib.flush())
        self._out.flush()
        return self._digests.hexdigests()

    def close(self) -> None:
        self._digests.close()


def compress(source: Path, tmp_dir: Path | None, level: int = ARTIFACT_LEVEL) -> Packed:
    """Gzip ``source`` into a new temp file; returns it and the sha256/sha512 of the *original*."""
    fd, name = tempfile.mkstemp(prefix="gzip-", suffix=".gz", dir=tmp_dir)
    target = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw, open(source, "rb") as f:
            writer = GzipHashWriter(raw, level)
            try:
                while chunk := f.read(CHUNK):
                    writer.write(chunk)
                hashes = writer.finish()
            finally:
                writer.close()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Packed(target, hashes)


def _size_and_small_body(path: Path) -> tuple[int, bytes | None]:
    """The copy's size, and its bytes when it is small (the common short log): one thread trip
    instead of one per read, each of which may wait for the GIL while the loop is busy."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return size, (f.read() if size <= SMALL_BODY else None)


async def _body(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
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
    packed: Packed,
) -> None:
    """createUpload (putUrl) → PUT the gzip copy with ``Content-Encoding: gzip`` → finishUpload.

    ``packed`` stays on disk (the caller owns it), so a retried attempt re-sends it as is.
    """
    size, small = await asyncio.to_thread(_size_and_small_body, packed.path)
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
        raise RuntimeError(f"object service offered no putUrl upload for {name}: {resp.get('uploadMethod')}")
    headers = {**method["headers"], "Content-Encoding": "gzip"}
    headers.setdefault("Content-Length", str(size))

    async def put_once(retry_for: Any) -> None:
        body = small if small is not None else _body(packed.path)
        try:
            async with session.put(method["url"], data=body, headers=headers) as put:
                if put.status >= 500:
                    return retry_for(aiohttp.ClientResponseError(put.request_info, (), status=put.status))
                put.raise_for_status()
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            return retry_for(e)
        return None

    await retry(RETRIES, put_once)
    await object_service.finishUpload(
        name, {"projectId": project_id, "uploadId": upload_id, "hashes": packed.hashes}
    )
