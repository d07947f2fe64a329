"""ContentStore hashes of big uploads, where sha512 runs on a helper thread (``objects/digests``).

Identity and gzip bodies of several MiB, fed in the small chunks aiohttp hands over, must be
stored as sent and hashed exactly like ``hashlib`` over the (decoded) bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tcworker.platform.errors import InputError
from tcworker.platform.objects.content import ContentStore


async def _chunks(body: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _plain() -> bytes:
    return (b"build step output line\n" * 200_000) + os.urandom(3 << 20)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_big_upload_is_stored_as_sent_and_hashed_over_decoded_bytes(
    tmp_path: Path, encoding: str
) -> None:
    plain = _plain()
    body = gzip.compress(plain, compresslevel=1) if encoding == "gzip" else plain
    store = ContentStore(tmp_path)
    target = store.path_for("big", "u1")
    length, hashes = await store.write(target, _chunks(body), len(body), gzip=encoding == "gzip")
    assert length == len(body)
    assert target.read_bytes() == body
    assert hashes == {
        "sha256": hashlib.sha256(plain).hexdigest(),
        "sha512": hashlib.sha512(plain).hexdigest(),
    }


async def test_truncated_big_gzip_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    body = gzip.compress(_plain(), compresslevel=1)[:-100]
    store = ContentStore(tmp_path)
    target = store.path_for("big", "u2")
    with pytest.raises(InputError, match="truncated"):
        await store.write(target, _chunks(body), len(body), gzip=True)
    assert not target.exists()
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*/*.part-*")))
