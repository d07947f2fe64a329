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

The PUT also carries ``Content-Digest: sha-256=:…:`` (RFC 9530: the digest of the bytes as sent,
i.e. of the gzip stream), computed in the same pass on the small compressed output. The local
object service verifies that instead of inflating and re-hashing the whole plain content; other
object services ignore the header. Task logs are compressed with ISA-L (``isal``, level 1: ~7–10×
zlib level 1's speed here, at a similar ratio) and hashed with sha256 only; other artifacts keep
zlib level 6 and both hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import aiohttp
from isal import isal_zlib
from taskcluster.aio.retry import retry

from tcworker.digests import PlainDigests
from tcworker.tcapi.clients import RETRIES  # one retry policy: the official client's, with its helper

CHUNK = 4 << 20
ARTIFACT_LEVEL = 6  # zlib's default, as generic-worker's gzip writer
SMALL_BODY = 256 * 1024  # PUT from memory up to this size
LOG_LEVEL = 1  # task logs can be GiBs of text: ISA-L level 1 (below 4 means ISA-L, sha256 only)
ISAL_MAX_LEVEL = 3


class Packed(NamedTuple):
    """A gzip copy ready to PUT, the hashes of the *plain* bytes it decodes to, and the
    ``Content-Digest`` value of the gzip bytes themselves (when it was computed). A small copy is
    kept in memory (``data``; ``path`` is then ``None``): no temp file to write, read back and
    delete for the common short log."""

    path: Path | None
    hashes: dict[str, str]
    content_digest: str | None = None
    data: bytes | None = None


class GzipHashWriter:
    """One pass over plain bytes that both gzips them into ``out`` and hashes them.

    ``wbits=31`` makes the compressor write the gzip header (mtime 0) and CRC itself, avoiding
    ``GzipFile``'s extra CRC pass; zlib, ISA-L and hashlib release the GIL on big chunks.
    Levels up to ``ISAL_MAX_LEVEL`` use ISA-L and sha256 alone (task logs); higher ones zlib.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        fast = level <= ISAL_MAX_LEVEL
        self._zlib = (
            isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
            if fast
            else zlib.compressobj(level, zlib.DEFLATED, 31)
        )
        self._digests = PlainDigests(sha512=not fast)
        self._encoded = hashlib.sha256()
        self.content_digest: str | None = None

    def _emit(self, data: bytes) -> None:
        if data:
            self._encoded.update(data)
            self._out.write(data)

    def write(self, chunk: bytes) -> None:
        self._digests.update(chunk)  # hashed on the helper thread while deflate runs here
        self._emit(self._zlib.compress(chunk))

    def finish(self) -> dict[str, str]:
        """Write the gzip trailer; returns the plain bytes' hashes (``content_digest`` is set)."""
        self._emit(self._zlib.flush())
        self._out.flush()
        self.content_digest = "sha-256=:" + base64.b64encode(self._encoded.digest()).decode() + ":"
        return self._digests.hexdigests()

    def close(self) -> None:
        self._digests.close()


def _gzip_into(source: BinaryIO, out: BinaryIO, level: int) -> tuple[dict[str, str], str | None]:
    """Gzip all of ``source`` into ``out``: (plain hashes, ``Content-Digest`` of the gzip bytes)."""
    writer = GzipHashWriter(out, level)
    try:
        while chunk := source.read(CHUNK):
            writer.write(chunk)
        return writer.finish(), writer.content_digest
    finally:
        writer.close()


def compress(source: Path, tmp_dir: Path | None, level: int = ARTIFACT_LEVEL) -> Packed:
    """Gzip ``source`` into a new temp file (in memory when it is small); returns the copy and
    the sha256/sha512 of the *original*."""
    with open(source, "rb") as f:
        if os.fstat(f.fileno()).st_size <= SMALL_BODY:
            out = io.BytesIO()
            hashes, digest = _gzip_into(f, out, level)
            return Packed(None, hashes, digest, out.getvalue())
        fd, name = tempfile.mkstemp(prefix="gzip-", suffix=".gz", dir=tmp_dir)
        target = Path(name)
        try:
            with os.fdopen(fd, "wb") as raw:
                hashes, digest = _gzip_into(f, raw, level)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return Packed(target, hashes, digest)


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
) -> int:
    """createUpload (putUrl) → PUT the gzip copy with ``Content-Encoding: gzip`` → finishUpload;
    returns the bytes sent.

    ``packed`` stays on disk (the caller owns it), so a retried attempt re-sends it as is.
    """
    if packed.data is not None:
        size, small = len(packed.data), packed.data
    else:
        assert packed.path is not None
        size, small = await asyncio.to_thread(_size_and_small_body, packed.path)
    path = packed.path
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
    if packed.content_digest:
        headers["Content-Digest"] = packed.content_digest
    headers.setdefault("Content-Length", str(size))

    async def put_once(retry_for: Any) -> None:
        body = small if small is not None else _body(path)  # type: ignore[arg-type]  # path set when no data
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
    return size
