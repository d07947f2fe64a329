"""Publishing artifacts of one run: object uploads, error, link and reference artifacts.

Data artifacts follow the queue's object flow (spec/platform.md §3.4): ``createArtifact``
(``storageType: object``) → ``taskcluster.aio.upload.upload`` with the returned credentials,
streamed from the file on disk → ``finishArtifact``; gzip-encoded artifacts go through
``gzip_upload`` instead (compressed copy, ``Content-Encoding: gzip``, hashes of the original),
compressed once before the first attempt (or handed over ready-made: the task log's copy).
Transient failures (5xx, connection) are retried as a whole; the queue accepts an identical re-post. Errors are translated here, at the
boundary (design G4): a 409 is the payload's fault (two different artifacts under one name →
``MalformedPayload``), anything else left after retries is ``ResourceUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from taskcluster.aio import upload as tc_upload

from tcworker.errors import MalformedPayload, ResourceUnavailable
from tcworker.tcapi.clients import Clients, is_transient, status_code
from tcworker.tcapi.gzip_upload import Packed, compress, upload_gzip

log = logging.getLogger(__name__)

ATTEMPTS = 4


class _ThreadFileReader:
    """``taskcluster`` reader that reads the file off the event loop (large logs, big builds)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def read(self, max_size: int) -> bytes:
        return await asyncio.to_thread(self._file.read, max_size)


class ArtifactPublisher:
    """Creates the artifacts of one run with the run's *current* task credentials."""

    def __init__(
        self,
        clients: Clients,
        queue: Callable[[], Any],
        task_id: str,
        run_id: int,
        retry_delay: float = 1.0,
        tmp_dir: Path | None = None,
        gzip: bool = True,
    ) -> None:
        self._clients = clients
        self._queue = queue
        self.task_id = task_id
        self.run_id = run_id
        self._retry_delay = retry_delay
        self.tmp_dir = tmp_dir  # where gzip copies are made (the run's private scratch dir)
        self.gzip = gzip  # False: every artifact is stored as identity (GW's createObjectArtifacts mode)

    async def _with_retries(self, what: str, attempt: Callable[[], Any]) -> Any:
        delay = self._retry_delay
        for i in range(ATTEMPTS):
            try:
                return await attempt()
            except Exception as e:
                code = status_code(e)
                if code == 409:
                    raise MalformedPayload(
                        f"{what}: the queue refused it as conflicting with an existing artifact "
                        f"of the same name (409): {e}"
                    ) from e
                if not is_transient(e) or i == ATTEMPTS - 1:
                    if code is not None and 400 <= code < 500 and code not in (408, 429):
                        raise MalformedPayload(f"{what}: rejected by the queue ({code}): {e}") from e
                    raise ResourceUnavailable(f"{what}: {e}") from e
                log.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def upload_file(
        self,
        name: str,
        path: Path,
        content_type: str,
        expires: str,
        content_encoding: str = "identity",
        packed: Packed | None = None,
        created: Mapping[str, Any] | None = None,
        announce_length: bool = True,
    ) -> None:
        """Upload ``path`` as object artifact ``name`` (streamed from disk; gzip-encoded on request).

        ``packed``: ``path``'s gzip copy and plain hashes, already made (the caller deletes it).
        ``created``: the answer of an earlier ``create_object`` for this artifact (made while the
        task ran), so the first attempt starts at the object service; retries re-post the
        identical request, which the queue accepts (spec §2.6.8). ``announce_length=False``
        leaves the optional ``contentLength`` out, as ``create_object`` does.
        """
        gzipped = content_encoding == "gzip" and self.gzip
        own_copy = gzipped and packed is None
        size = -1  # only needed to announce it or to send the file as is
        if announce_length or not gzipped:
            size = (await asyncio.to_thread(path.stat)).st_size
        if own_copy:
            packed = await self._with_retries(
                f"uploading artifact {name}", lambda: asyncio.to_thread(compress, path, self.tmp_dir)
            )
        try:
            length = size if announce_length else None
            await self._upload(
                name, path, length, size, content_type, expires, packed if gzipped else None, created
            )
        finally:
            if own_copy and packed is not None:
                await asyncio.to_thread(packed.path.unlink, True)

    async def create_object(
        self, name: str, content_type: str, expires: str, length: int | None = None
    ) -> dict[str, Any]:
        """``createArtifact`` (``object``) alone: the upload's name, ``uploadId`` and credentials."""
        body = _object_body(content_type, expires, length)
        result: dict[str, Any] = await self._with_retries(
            f"uploading artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )
        return result

    async def _upload(
        self,
        name: str,
        path: Path,
        length: int | None,
        size: int,
        content_type: str,
        expires: str,
        packed: Packed | None,
        created: Mapping[str, Any] | None,
    ) -> None:
        body = _object_body(content_type, expires, length)
        ready = [created] if created is not None else []

        async def attempt() -> None:
            if ready:
                resp = ready.pop()
            else:
                resp = await self._queue().createArtifact(self.task_id, str(self.run_id), name, body)
            object_service = self._clients.object_service(resp["credentials"])
            if packed is not None:
                await upload_gzip(
                    session=self._clients.session,
                    object_service=object_service,
                    project_id=resp["projectId"],
                    name=resp["name"],
                    upload_id=resp["uploadId"],
                    expires=resp["expires"],
                    content_type=content_type,
                    packed=packed,
                )
                await self._queue().finishArtifact(
                    self.task_id, str(self.run_id), name, {"uploadId": resp["uploadId"]}
                )
                return
            f: BinaryIO = await asyncio.to_thread(open, path, "rb")
            try:

                async def reader_factory() -> _ThreadFileReader:
                    await asyncio.to_thread(f.seek, 0)
                    return _ThreadFileReader(f)

                await tc_upload.upload(
                    projectId=resp["projectId"],
                    name=resp["name"],
                    contentType=content_type,
                    contentLength=size,
                    expires=resp["expires"],
                    uploadId=resp["uploadId"],
                    readerFactory=reader_factory,
                    objectService=object_service,
                )
            finally:
                f.close()
            await self._queue().finishArtifact(
                self.task_id, str(self.run_id), name, {"uploadId": resp["uploadId"]}
            )

        await self._with_retries(f"uploading artifact {name}", attempt)

    async def create_error(self, name: str, reason: str, message: str, expires: str) -> None:
        body = {"storageType": "error", "reason": reason, "message": message[:4096], "expires": expires}
        await self._with_retries(
            f"creating error artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )

    async def create_link(self, name: str, target: str, content_type: str, expires: str) -> None:
        body = {"storageType": "link", "artifact": target, "contentType": content_type, "expires": expires}
        await self._with_retries(
            f"creating link artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )

    async def create_reference(self, name: str, url: str, content_type: str, expires: str) -> None:
        body = {"storageType": "reference", "url": url, "contentType": content_type, "expires": expires}
        await self._with_retries(
            f"creating reference artifact {name}",
            lambda: self._queue().createArtifact(self.task_id, str(self.run_id), name, body),
        )


def _object_body(content_type: str, expires: str, length: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"storageType": "object", "expires": expires, "contentType": content_type}
    if length is not None:
        body["contentLength"] = length
    return body
