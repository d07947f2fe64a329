"""Object bytes on disk: streamed writes with sha256/sha512 computed on the way, atomic rename.

Writes and hashing happen off the event loop in ~1 MiB batches, so an upload never sits in
memory whole and the loop never blocks on the disk; sha512 runs beside sha256 (``digests``).
A body smaller than one batch (most artifacts) is written, checked and renamed in a single
thread trip instead of one per step, and one of at most ``INLINE_BODY`` (a trivial task's log)
on the loop itself.

A ``gzip`` upload (PUT with ``Content-Encoding: gzip``) is stored as sent and served back with
that encoding; its hashes are computed over the *decoded* bytes, because that is what the
official download helper verifies after its HTTP client has decoded the response. When the
uploader declared the sha256 of the bytes it sends (``sent_sha256``, from ``Content-Digest``),
only those (compressed) bytes are hashed and checked: no inflating, no pass over the plain
content; the plain hashes are then the uploader's (the download helper still checks them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from tcworker.digests import PlainDigests
from tcworker.platform.errors import InputError, InputTooLarge

BATCH = 1 << 20
# A body up to this size is stored on the loop: a few system calls and ~0.1 ms of hashing cost
# less than handing it to a thread and back (the GIL changes hands at each of its system calls).
INLINE_BODY = 64 * 1024


class ContentStore:
    """Files under ``<data-dir>/objects/``, named by a hash of (object name, upload id)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, name: str, upload_id: str) -> Path:
        digest = hashlib.sha256(f"{name}\0{upload_id}".encode()).hexdigest()
        return self.root / digest[:2] / digest

    async def write(
        self,
        target: Path,
        chunks: AsyncIterator[bytes],
        expected_length: int | None,
        *,
        gzip: bool = False,
        sent_sha256: bytes | None = None,
    ) -> tuple[int, dict[str, str]]:
        """Stream ``chunks`` into ``target`` (replacing it atomically); returns (length, hashes).

        With ``sent_sha256`` (gzip only) the returned hashes are empty: the bytes were checked
        against it instead. More bytes than ``expected_length`` raise ``InputTooLarge`` as soon as
        they arrive (the partial file is removed), so a chunked body cannot fill the disk past what
        was declared.
        """
        part = target.with_name(f"{target.name}.part-{secrets.token_hex(4)}")
        hashes = PlainDigests()
        trusted = sent_sha256 is not None and gzip
        sent = hashlib.sha256()
        decoder = zlib.decompressobj(wbits=31) if gzip and not trusted else None
        length = 0
        first = bytearray()

        def digest(data: bytes) -> None:
            if trusted:
                sent.update(data)
                if len(first) < 2:
                    first.extend(data[: 2 - len(first)])
                return
            if decoder is None:
                hashes.update(data)
                return
            if decoder.eof and data:
                raise InputError("data continues after the end of the gzip stream")
            try:
                while data:
                    hashes.update(decoder.decompress(data, BATCH))
                    data = decoder.unconsumed_tail
            except zlib.error as exc:
                raise InputError(f"Content-Encoding is gzip but the body is not valid gzip: {exc}") from exc

        def open_part() -> int:
            target.parent.mkdir(parents=True, exist_ok=True)
            return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

        def flush(fd: int, data: bytes) -> None:
            digest(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        def finish(fd: int, last: bytes) -> dict[str, str]:
            """Write the last bytes, check the whole body, then move the file into place."""
            if last:
                flush(fd, last)
            if expected_length is not None and length != expected_length:
                raise InputError(f"received {length} bytes but Content-Length said {expected_length}")
            if decoder is not None and not decoder.eof:
                raise InputError("the gzip stream is truncated")
            if trusted:
                assert sent_sha256 is not None
                if not hmac.compare_digest(sent.digest(), sent_sha256):
                    raise InputError("the body does not match its Content-Digest")
                if bytes(first) != b"\x1f\x8b":
                    raise InputError("Content-Encoding is gzip but the body is not valid gzip")
            digests = {} if trusted else hashes.hexdigests()
            os.replace(part, target)
            return digests

        def close(fd: int | None, failed: bool) -> None:
            if failed:
                _unlink(part)
            if fd is not None:
                os.close(fd)
            hashes.close()

        def whole(data: bytes) -> dict[str, str]:
            """A body smaller than one batch (task logs, most artifacts): one thread trip in all."""
            fd: int | None = None
            try:
                fd = open_part()
                digests = finish(fd, data)
            except BaseException:
                close(fd, True)
                raise
            close(fd, False)
            return digests

        fd: int | None = None
        buffer: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                length += len(chunk)
                if expected_length is not None and length > expected_length:
                    # Stop at once: a chunked body has no Content-Length to refuse it up front.
                    raise InputTooLarge(
                        f"received more than the {expected_length} bytes declared for this upload; "
                        "stopped reading"
                    )
                buffer.append(chunk)
                size += len(chunk)
                if size >= BATCH:
                    if fd is None:
                        fd = await asyncio.to_thread(open_part)
                    await asyncio.to_thread(flush, fd, b"".join(buffer))
                    buffer, size = [], 0
        except BaseException:
            await asyncio.to_thread(close, fd, fd is not None)
            raise
        if fd is None:
            body = b"".join(buffer)
            if len(body) <= INLINE_BODY:  # open, write, hash, rename: less than the thread trip
                return length, whole(body)
            return length, await asyncio.to_thread(whole, body)
        try:
            digests = await asyncio.to_thread(finish, fd, b"".join(buffer))
        except BaseException:
            await asyncio.to_thread(close, fd, True)
            raise
        await asyncio.to_thread(close, fd, False)
        return length, digests

    async def write_bytes(self, target: Path, data: bytes) -> tuple[int, dict[str, str]]:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.write(target, one(), len(data))

    def remove_partial_uploads(self) -> int:
        """Delete ``*.part-*`` files left by a crash mid-upload (call before serving); returns how many."""
        removed = 0
        for part in self.root.glob("*/*.part-*") if self.root.exists() else []:
            _unlink(part)
            removed += 1
        return removed

    @staticmethod
    def remove(path: Path) -> None:
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
