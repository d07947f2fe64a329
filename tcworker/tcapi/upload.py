"""Publishing artifacts of one run: object uploads, error, link and reference artifacts.

Data artifacts follow the queue's object flow (spec/platform.md §3.4): ``createArtifact``
(``storageType: object``) → ``taskcluster.aio.upload.upload`` with the returned credentials,
streamed from the file on disk → ``finishArtifact``; gzip-encoded artifacts go through
``gzip_upload`` instead (compressed copy, ``Content-Encoding: gzip``, hashes of the original),
compressed once before the first attempt (or handed over ready-made: the task log's copy).
Retries are the official client's (``tcworker.tcapi.clients``): no loop here repeats a call the
client already retried. Errors are translated at this boundary by ``clients.translate``.
``createArtifact`` never carries the optional ``contentLength``: the real queue (v106) answers
``finishArtifact`` with 500 when it did (its artifact-created message schema lacks the field).
Every object artifact's sha256 of the plain content is kept in ``uploaded_sha256`` (for the
chain of trust).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from taskcluster.aio import upload as tc_upload

from tcworker.tcapi.clients import RETRIES, Clients, translate
from tcworker.tcapi.gzip_upload import Packed, compress, upload_gzip

log = logging.getLogger(__name__)


class _HashingFileReader:
    """``taskcluster`` reader that reads the file off the event loop and hashes what it reads."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.sha256 = hashlib.sha256()

    async def read(self, max_size: int) -> bytes:
        chunk = await asyncio.to_thread(self._read_and_hash, max_size)
        return chunk

    def _read_and_hash(self, max_size: int) -> bytes:
        chunk = self._file.read(max_size)
        self.sha256.update(chunk)
        return chunk


class ArtifactPublisher:
    """Creates the artifacts of one run with the run's *current* task credentials."""

    def __init__(
        self,
        clients: Clients,
        queue: Callable[[], Any],
        task_id: str,
        run_id: int,
        tmp_dir: Path | None = None,
        gzip: bool = True,
    ) -> None:
        self._clients = clients
        self._queue = queue
        self.task_id = task_id
        self.run_id = run_id
        self.tmp_dir = tmp_dir  # where gzip copies are made (the run's private scratch dir)
        self.gzip = gzip  # False: every artifact is stored as identity (GW's createObjectArtifacts mode)
        self.uploaded_sha256: dict[str, str] = {}  # artifact name → sha256 hex of the plain content
        self.uploaded_bytes = 0  # bytes sent to the object service (gzip bytes when gzipped), for metrics
        self.upload_seconds = 0.0  # wall time spent in object uploads (createArtifact → finishArtifact)

    async def _call(self, what: str, attempt: Callable[[], Any]) -> Any:
        try:
            return await attempt()
        except Exception as e:
            raise translate(e, what) from e

    async def upload_file(
        self,
        name: str,
        path: Path,
        content_type: str,
        expires: str,
        content_encoding: str = "identity",
        packed: Packed | None = None,
        created: Mapping[str, Any] | None = None,
    ) -> None:
        """Upload ``path`` as object artifact ``name`` (streamed from disk; gzip-encoded on request).

        ``packed``: ``path``'s gzip copy and plain hashes, already made (the caller deletes it).
        ``created``: the answer of an earlier ``create_object`` for this artifact (made while the
        task ran), so the upload starts at the object service.
        """
        gzipped = content_encoding == "gzip" and self.gzip
        own_copy = gzipped and packed is None
        what = f"uploading artifact {name}"
        if own_copy:
            try:
                packed = await asyncio.to_thread(compress, path, self.tmp_dir)
            except OSError as e:
                raise translate(e, what) from e
        started = time.monotonic()
        try:
            await self._call(
                what, lambda: self._upload(name, path, content_type, expires, packed if gzipped else None, created)
            )
        finally:
            self.upload_seconds += time.monotonic() - started
            if own_copy and packed is not None and packed.path is not None:
                await asyncio.to_thread(packed.path.unlink, True)

    async def upload_bytes(self, name: str, data: bytes, content_type: str, expires: str) -> None:
        """A small in-memory object artifact (records, signatures), stored as identity."""
        resp = await self.create_object(name, content_type, expires)

        async def attempt() -> None:
            await tc_upload.uploadFromBuf(
                projectId=resp["projectId"],
                name=resp["name"],
                contentType=content_type,
                contentLength=len(data),
                expires=resp["expires"],
                uploadId=resp["uploadId"],
                objectService=self._clients.object_service(resp["credentials"]),
                data=data,
                maxRetries=RETRIES,
            )
            await self._finish(name, resp)

        started = time.monotonic()
        try:
            await self._call(f"uploading artifact {name}", attempt)
        finally:
            self.upload_seconds += time.monotonic() - started
        self.uploaded_sha256[name] = hashlib.sha256(data).hexdigest()
        self.uploaded_bytes += len(data)

    async def create_object(self, name: str, content_type: str, expires: str) -> dict[str, Any]:
        """``createArtifact`` (``object``) alone: the upload's name, ``uploadId`` and credentials."""
        body = _object_body(content_type, expires)
        result: dict[str, Any] = await self._call(
            f"uploading artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )
        return result

    async def _finish(self, name: str, resp: Mapping[str, Any]) -> None:
        await self._queue().finishArtifact(
            self.task_id, str(self.run_id), name, {"uploadId": resp["uploadId"]}
        )

    async def _upload(
        self,
        name: str,
        path: Path,
        content_type: str,
        expires: str,
        packed: Packed | None,
        created: Mapping[str, Any] | None,
    ) -> None:
        if created is not None:
            resp = created
        else:
            resp = await self._queue().createArtifact(
                self.task_id, str(self.run_id), name, _object_body(content_type, expires)
            )
        object_service = self._clients.object_service(resp["credentials"])
        if packed is not None:
            sent = await upload_gzip(
                session=self._clients.session,
                object_service=object_service,
                project_id=resp["projectId"],
                name=resp["name"],
                upload_id=resp["uploadId"],
                expires=resp["expires"],
                content_type=content_type,
                packed=packed,
            )
            await self._finish(name, resp)
            self.uploaded_sha256[name] = packed.hashes["sha256"]
            self.uploaded_bytes += sent
            return
        f: BinaryIO = await asyncio.to_thread(open, path, "rb")
        readers: list[_HashingFileReader] = []
        try:
            size = (await asyncio.to_thread(path.stat)).st_size

            async def reader_factory() -> _HashingFileReader:
                await asyncio.to_thread(f.seek, 0)
                readers.append(_HashingFileReader(f))
                return readers[-1]

            await tc_upload.upload(
                projectId=resp["projectId"],
                name=resp["name"],
                contentType=content_type,
                contentLength=size,
                expires=resp["expires"],
                uploadId=resp["uploadId"],
                readerFactory=reader_factory,
                objectService=object_service,
                maxRetries=RETRIES,
            )
        finally:
            f.close()
        await self._finish(name, resp)
        self.uploaded_bytes += size
        if readers:
            self.uploaded_sha256[name] = readers[-1].sha256.hexdigest()

    async def create_error(self, name: str, reason: str, message: str, expires: str) -> None:
        body = {"storageType": "error", "reason": reason, "message": message[:4096], "expires": expires}
        await self._call(
            f"creating error artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )

    async def create_link(self, name: str, target: str, content_type: str, expires: str) -> None:
        body = {"storageType": "link", "artifact": target, "contentType": content_type, "expires": expires}
        await self._call(
            f"creating link artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )

    async def create_reference(self, name: str, url: str, content_type: str, expires: str) -> None:
        body = {"storageType": "reference", "url": url, "contentType": content_type, "expires": expires}
        await self._call(
            f"creating reference artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )


def _object_body(content_type: str, expires: str) -> dict[str, Any]:
    """No ``contentLength``: optional, and the real queue's finishArtifact breaks on it (see above)."""
    return {"storageType": "object", "expires": expires, "contentType": content_type}
