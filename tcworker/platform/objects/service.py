"""Object service semantics (spec §3): createUpload, data upload, finishUpload, downloads.

Bytes go to disk through :class:`ContentStore`; the ``objects`` table records each object's
upload triple (projectId, uploadId, expires), the uploader's hashes and the hashes computed
while the data streamed in. finishUpload checks them against each other.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tcworker.platform.clock import json_ms, now_ms, parse_ms
from tcworker.platform.errors import (
    InputError,
    NoMatchingMethod,
    RequestConflict,
    ResourceNotFound,
)
from tcworker.platform.objects.content import ContentStore
from tcworker.platform.objects.tokens import TokenSigner
from tcworker.platform.store.db import Database

INLINE_LIMIT = 8192
PUT_URL_SECONDS = 45 * 60
GET_URL_SECONDS = 45 * 60


def register_upload(
    conn: sqlite3.Connection,
    content: ContentStore,
    name: str,
    project_id: str,
    upload_id: str,
    expires_ms: int,
    hashes: dict[str, Any],
) -> sqlite3.Row:
    """Create or re-confirm an unfinished upload (same triple) and merge hashes; 409 otherwise."""
    row = conn.execute("SELECT * FROM objects WHERE name = ?", (name,)).fetchone()
    if row is not None and row["expires_ms"] < now_ms():
        conn.execute("DELETE FROM objects WHERE name = ?", (name,))
        content.remove(Path(row["data_file"]))
        row = None
    if row is None:
        conn.execute(
            "INSERT INTO objects (name, project_id, upload_id, expires_ms, hashes, data_file) VALUES (?,?,?,?,?,?)",
            (
                name,
                project_id,
                upload_id,
                expires_ms,
                json.dumps(hashes),
                str(content.path_for(name, upload_id)),
            ),
        )
    else:
        if row["finished"]:
            raise RequestConflict(f"object {name} is already finished")
        if (row["project_id"], row["upload_id"], row["expires_ms"]) != (project_id, upload_id, expires_ms):
            raise RequestConflict(
                f"object {name} already has an upload with a different projectId/uploadId/expires"
            )
        merged = merge_hashes(json.loads(row["hashes"]), hashes)
        conn.execute("UPDATE objects SET hashes = ? WHERE name = ?", (json.dumps(merged), name))
    final: sqlite3.Row = conn.execute("SELECT * FROM objects WHERE name = ?", (name,)).fetchone()
    return final


def merge_hashes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for algo, value in new.items():
        if algo in old and old[algo] != value:
            raise RequestConflict(f"hash {algo} cannot be changed once set")
    return {**old, **new}


class ObjectService:
    def __init__(self, db: Database, content: ContentStore, signer: TokenSigner) -> None:
        self.db = db
        self.content = content
        self.signer = signer

    async def create_upload(self, name: str, body: dict[str, Any], root_url: str) -> dict[str, Any]:
        expires_ms = parse_ms(body["expires"])
        proposed = body["proposedUploadMethods"]
        inline: bytes | None = None
        if "dataInline" in proposed:
            try:
                inline = base64.b64decode(proposed["dataInline"]["objectData"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InputError("dataInline.objectData is not valid base64") from exc
            if len(inline) > INLINE_LIMIT:
                raise InputError(f"dataInline data is larger than {INLINE_LIMIT} bytes")
        row = await self.db.run(
            register_upload,
            self.content,
            name,
            body["projectId"],
            body["uploadId"],
            expires_ms,
            body.get("hashes", {}),
        )
        method: dict[str, Any] = {}
        if inline is not None:
            length, hashes = await self.content.write_bytes(Path(row["data_file"]), inline)
            await self.db.run(
                self._record_data,
                name,
                body["uploadId"],
                proposed["dataInline"]["contentType"],
                length,
                hashes,
            )
            method = {"dataInline": True}
        elif "putUrl" in proposed:
            put = proposed["putUrl"]
            expires_s = now_ms() // 1000 + PUT_URL_SECONDS
            token = self.signer.sign("put", name, expires_s, body["uploadId"], int(put["contentLength"]))
            method = {
                "putUrl": {
                    "url": f"{root_url}/object-data/{token}",
                    "expires": json_ms(expires_s * 1000),
                    "headers": {
                        "Content-Type": put["contentType"],
                        "Content-Length": str(put["contentLength"]),
                        "Content-Encoding": "identity",
                    },
                }
            }
        return {
            "projectId": body["projectId"],
            "uploadId": body["uploadId"],
            "expires": json_ms(expires_ms),
            "uploadMethod": method,
        }

    @staticmethod
    def _record_data(
        conn: sqlite3.Connection,
        name: str,
        upload_id: str,
        content_type: str,
        length: int,
        hashes: dict[str, str],
        encoding: str | None = None,
    ) -> None:
        cur = conn.execute(
            "UPDATE objects SET content_type = ?, content_length = ?, data_hashes = ?, content_encoding = ?"
            " WHERE name = ? AND upload_id = ? AND finished = 0",
            (content_type, length, json.dumps(hashes), encoding, name, upload_id),
        )
        if cur.rowcount != 1:
            raise RequestConflict(f"object {name} is no longer accepting data for this upload")

    async def receive(
        self,
        token: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        length: int | None,
        encoding: str = "identity",
        content_digest: str | None = None,
    ) -> None:
        """The PUT behind a ``putUrl``: stream the body to disk, record its hashes.

        ``encoding`` is the PUT's Content-Encoding: ``identity`` or ``gzip`` (kept and served back).
        A gzip body with a ``Content-Digest: sha-256=:…:`` header (RFC 9530, digest of the bytes as
        sent) is checked against that digest alone instead of being inflated and hashed whole;
        its plain-content hashes are then the uploader's, given at finishUpload.
        """
        claims = self.signer.check("put", token)
        if claims is None:
            raise ResourceNotFound("unknown or expired upload URL")
        if encoding not in ("identity", "gzip"):
            raise InputError(f"Content-Encoding {encoding[:50]!r} is not supported (identity or gzip)")
        name, upload_id, promised = claims
        if promised >= 0 and length is not None and length != promised:
            raise InputError(
                f"Content-Length {length} differs from the contentLength {promised} given to createUpload"
            )
        row = await self.db.read(_object_row, name)
        if row is None or row["upload_id"] != upload_id or row["finished"]:
            raise RequestConflict(f"object {name} is not accepting data for this upload")
        expected = length if length is not None else (promised if promised >= 0 else None)
        gzip = encoding == "gzip"
        sent_sha256 = parse_content_digest(content_digest) if gzip and content_digest else None
        size, hashes = await self.content.write(
            Path(row["data_file"]), chunks, expected, gzip=gzip, sent_sha256=sent_sha256
        )
        await self.db.run(
            self._record_data,
            name,
            upload_id,
            content_type or "application/binary",
            size,
            hashes,
            "gzip" if gzip else None,
        )

    async def finish_upload(self, name: str, body: dict[str, Any]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = _object_row(conn, name)
            if row is None:
                raise ResourceNotFound(f"object {name} not found")
            if row["project_id"] != body["projectId"]:
                raise InputError("projectId does not match the upload")
            if row["upload_id"] != body["uploadId"]:
                raise RequestConflict("uploadId does not match the upload")
            given = body.get("hashes", {})
            merged = merge_hashes(json.loads(row["hashes"]), given)
            if row["finished"]:
                return
            if row["data_hashes"] is None:
                raise InputError(f"no data was uploaded for object {name}")
            computed = json.loads(row["data_hashes"])
            for algo in ("sha256", "sha512"):
                if algo in merged and algo in computed and merged[algo] != computed[algo]:
                    raise InputError(f"{algo} given for object {name} does not match the uploaded data")
            if not any(algo in merged or algo in computed for algo in ("sha256", "sha512")):
                raise InputError(
                    f"object {name} was uploaded with a Content-Digest only: finishUpload must give "
                    "the sha256 or sha512 of its content"
                )
            conn.execute(
                "UPDATE objects SET finished = 1, hashes = ? WHERE name = ?",
                (json.dumps({**merged, **computed}), name),
            )

        await self.db.run(op)

    async def finished_object(self, name: str) -> sqlite3.Row:
        row = await self.db.read(_object_row, name)
        if row is None or not row["finished"] or row["expires_ms"] < now_ms():
            raise ResourceNotFound(f"object {name} not found")
        return row

    def simple_url(self, name: str, root_url: str) -> str:
        token = self.signer.sign("get", name, now_ms() // 1000 + GET_URL_SECONDS)
        return f"{root_url}/object-data/{token}"

    async def start_download(self, name: str, accept: dict[str, Any], root_url: str) -> dict[str, Any]:
        row = await self.finished_object(name)
        if accept.get("getUrl"):
            expires_s = now_ms() // 1000 + GET_URL_SECONDS
            return {
                "method": "getUrl",
                "url": f"{root_url}/object-data/{self.signer.sign('get', name, expires_s)}",
                "expires": json_ms(expires_s * 1000),
                "hashes": _public_hashes(row),
            }
        if accept.get("simple"):
            return {"method": "simple", "url": self.simple_url(name, root_url)}
        raise NoMatchingMethod("none of the accepted download methods is supported (getUrl, simple)")

    async def metadata(self, name: str) -> dict[str, Any]:
        row = await self.finished_object(name)
        return {
            "projectId": row["project_id"],
            "expires": json_ms(row["expires_ms"]),
            "hashes": _public_hashes(row),
        }

    async def data_for(self, token: str) -> tuple[Path, dict[str, str]]:
        """The file behind a download URL and the headers to serve it with."""
        claims = self.signer.check("get", token)
        if claims is None:
            raise ResourceNotFound("unknown or expired download URL")
        row = await self.finished_object(claims[0])
        headers = {"Content-Type": row["content_type"] or "application/binary"}
        if row["content_encoding"]:
            headers["Content-Encoding"] = row["content_encoding"]
        return Path(row["data_file"]), headers


def parse_content_digest(header: str) -> bytes:
    """The sha-256 value of an RFC 9530 ``Content-Digest`` header (other algorithms: 400)."""
    for member in header.split(","):
        algo, sep, value = member.strip().partition("=")
        if sep and algo.strip().lower() == "sha-256":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == ":":
                try:
                    digest = base64.b64decode(value[1:-1], validate=True)
                except (binascii.Error, ValueError):
                    digest = b""
                if len(digest) == 32:
                    return digest
            raise InputError("Content-Digest sha-256 must be a base64 byte sequence of 32 bytes (:...:)")
    raise InputError("Content-Digest must include sha-256")


def _object_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM objects WHERE name = ?", (name,)).fetchone()
    return row


def _public_hashes(row: sqlite3.Row) -> dict[str, str]:
    hashes = json.loads(row["hashes"])
    return {k: v for k, v in hashes.items() if isinstance(v, str)}
