"""The downloads store: mount content kept in ``downloadsDir`` by its sha256, shared by all runs.

Each content source has a key (``artifact:<taskId>:<name>``, ``urlcontent:<url>``,
``raw:<sha256>``); the index (``downloads.json``) maps keys to the sha256 of what they gave,
and files are stored once per sha256 (``sha256-<hex>``), so two sources with the same bytes share
one file. Concurrent runs asking for one key wait on one lock and the second finds the first's
file. A download streams into ``.partial-<random>`` (hashed while written) and is renamed only
when complete, so a crash leaves only a partial file that the orphan sweep removes.

Reuse re-verifies the file's sha256 (for tar formats the caller may hash while extracting and
confirm afterwards, which avoids reading the file twice). A required sha256 that does not match
a fresh download fails the run (``ContentMismatch``, resolution failed) and nothing is kept; one
that does not match the stored content of a key drops that key and downloads again.
Files in use by a run are never evicted by garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcworker.errors import TaskFailed
from tcworker.mounts.progress import DownloadProgress
from tcworker.statefile import read_state as read_index
from tcworker.statefile import write_state as write_index

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20
PARTIAL_PREFIX = ".partial-"
FILE_PREFIX = "sha256-"
INDEX_NAME = "downloads.json"


class ContentMismatch(TaskFailed):
    """The content's sha256 is not the one the payload requires (failed, not retried)."""


class ContentCorrupt(TaskFailed):
    """A stored download no longer has the sha256 it was stored under (evicted)."""


class HashingWriter:
    """Streams a download to a file, hashing and counting as it goes; ``reset`` starts over
    (the official client's ``writerFactory`` is called again for each retry)."""

    def __init__(self, path: Path, progress: DownloadProgress | None = None) -> None:
        self.path = path
        self.progress = progress
        self._file: Any = None
        self.reset()

    def reset(self) -> HashingWriter:
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "wb", buffering=HASH_CHUNK)  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        self.size = 0
        if self.progress is not None:
            self.progress.done = 0
        return self

    async def write(self, data: bytes) -> None:
        self._file.write(data)
        self.digest.update(data)
        self.size += len(data)
        if self.progress is not None:
            self.progress.add(len(data))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.progress is not None:
            self.progress.close()


Fetch = Callable[[Callable[[], Awaitable[HashingWriter]]], Awaitable[None]]


@dataclass
class Download:
    """One stored content file lent to a run (release it with ``DownloadStore.release``)."""

    key: str
    sha256: str
    path: Path
    size: int
    verified: bool  # False: reused without re-hashing; the caller must ``confirm`` it
    released: bool = False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadStore:
    """Content files under ``root`` (``downloadsDir``), see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index_path = root / INDEX_NAME
        self._lock = asyncio.Lock()
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._in_use: dict[str, int] = {}  # sha256 → runs holding it

    def _file(self, sha256: str) -> Path:
        return self.root / f"{FILE_PREFIX}{sha256}"

    async def obtain(
        self,
        key: str,
        fetch: Fetch,
        *,
        describe: str,
        required_sha256: str | None,
        task_log: Any,
        total: int | None = None,
        verify_later: bool = False,
    ) -> Download:
        """The content of ``key``: reused when stored (and still valid), else fetched now."""
        lock = self._key_locks.setdefault(key, asyncio.Lock())
        async with lock:
            dl = await self._reuse(key, required_sha256, task_log, verify_later)
            if dl is None:
                dl = await self._fetch(key, fetch, describe, required_sha256, task_log, total)
        return dl

    async def _reuse(
        self, key: str, required: str | None, task_log: Any, verify_later: bool
    ) -> Download | None:
        async with self._lock:
            index = read_index(self._index_path)
            sha = index.get("keys", {}).get(key)
            entry = index.get("files", {}).get(sha) if sha else None
            path = self._file(sha) if sha else None
            if sha is None or entry is None or path is None or not path.is_file():
                return None
            if required and required != sha:
                task_log.warn(
                    f"[mounts] Stored content of {key} has sha256 {sha}, but {required} is required: "
                    "downloading it again"
                )
                index["keys"].pop(key, None)
                await asyncio.to_thread(write_index, self._index_path, index)
                return None
            self._in_use[sha] = self._in_use.get(sha, 0) + 1
        dl = Download(key, sha, path, int(entry.get("size", 0)), verified=False)
        if not verify_later:
            try:
                await self.confirm(dl, await asyncio.to_thread(sha256_file, path))
            except ContentCorrupt as e:
                task_log.warn(f"[mounts] {e}: downloading it again")
                return None
        await self._touch(sha)
        task_log.info(f"[mounts] Reusing stored content of {key} (sha256 {sha})")
        return dl

    async def confirm(self, dl: Download, observed_sha256: str) -> None:
        """Check a reused file's hash computed by the caller; a mismatch evicts it (and raises)."""
        if observed_sha256 == dl.sha256:
            dl.verified = True
            return
        await self.release(dl)
        await self.evict(dl.sha256)
        raise ContentCorrupt(
            f"stored content of {dl.key} changed on disk (sha256 {observed_sha256}, stored as "
            f"{dl.sha256}); evicted"
        )

    async def _fetch(
        self,
        key: str,
        fetch: Fetch,
        describe: str,
        required: str | None,
        task_log: Any,
        total: int | None,
    ) -> Download:
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        partial = self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
        progress = DownloadProgress(describe, total)
        writer = HashingWriter(partial, progress)
        task_log.info(f"[mounts] Downloading {describe}")
        started = time.monotonic()

        async def factory() -> HashingWriter:
            return writer.reset()

        try:
            await fetch(factory)
            writer.close()
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
        sha = writer.digest.hexdigest()
        if required and required != sha:
            partial.unlink(missing_ok=True)
            task_log.error(
                f"[mounts] Download {describe} has sha256 {sha} but the payload requires {required}: "
                "evicted from the downloads store, not retrying download"
            )
            raise ContentMismatch(f"{describe}: sha256 {sha} does not match the required {required}")
        if not required:
            task_log.warn(f"[mounts] Download {describe} has sha256 {sha} (no sha256 given in the payload)")
        async with self._lock:
            target = self._file(sha)
            await asyncio.to_thread(os.replace, partial, target)
            index = read_index(self._index_path)
            index.setdefault("keys", {})[key] = sha
            now = time.time()
            files = index.setdefault("files", {})
            files[sha] = {**files.get(sha, {"created": now}), "size": writer.size, "lastUsed": now}
            await asyncio.to_thread(write_index, self._index_path, index)
            self._in_use[sha] = self._in_use.get(sha, 0) + 1
        task_log.info(
            f"[mounts] Downloaded {writer.size} bytes in {time.monotonic() - started:.2f}s (sha256 {sha})"
        )
        return Download(key, sha, target, writer.size, verified=True)

    async def _touch(self, sha: str) -> None:
        async with self._lock:
            index = read_index(self._index_path)
            entry = index.get("files", {}).get(sha)
            if entry is not None:
                entry["lastUsed"] = time.time()
                entry["hits"] = int(entry.get("hits", 0)) + 1
                await asyncio.to_thread(write_index, self._index_path, index)

    async def release(self, dl: Download) -> None:
        """Give the file back (idempotent per ``Download``)."""
        if dl.released:
            return
        dl.released = True
        async with self._lock:
            left = self._in_use.get(dl.sha256, 0) - 1
            if left > 0:
                self._in_use[dl.sha256] = left
            else:
                self._in_use.pop(dl.sha256, None)

    async def evict(self, sha: str) -> bool:
        """Remove a stored file and every key pointing at it (unless a run holds it)."""
        async with self._lock:
            if self._in_use.get(sha):
                return False
            index = read_index(self._index_path)
            index.setdefault("files", {}).pop(sha, None)
            index["keys"] = {k: v for k, v in index.get("keys", {}).items() if v != sha}
            await asyncio.to_thread(write_index, self._index_path, index)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(self._file(sha).unlink)
        log.info("downloads: evicted %s", sha)
        return True

    async def idle_files(self) -> list[tuple[float, str]]:
        """(last used, sha256) of stored files no run holds, oldest first (for the disk GC)."""
        async with self._lock:
            files = read_index(self._index_path).get("files", {})
            return sorted(
                (float(e.get("lastUsed", 0)), sha) for sha, e in files.items() if not self._in_use.get(sha)
            )

    async def remove_orphans(self) -> list[str]:
        """Partial downloads and files no index entry knows (crash leftovers); index entries whose
        file is gone are dropped. Returns the names removed."""
        removed: list[str] = []
        async with self._lock:
            if not self.root.is_dir():
                return removed
            index = read_index(self._index_path)
            files = index.setdefault("files", {})
            for child in await asyncio.to_thread(lambda: list(self.root.iterdir())):
                name = child.name
                if not name.startswith((PARTIAL_PREFIX, FILE_PREFIX, f".{INDEX_NAME}.")):
                    continue  # not this store's (the docker engine keeps image downloads here too)
                known = name.startswith(FILE_PREFIX) and name[len(FILE_PREFIX) :] in files
                busy_partial = name.startswith((PARTIAL_PREFIX, f".{INDEX_NAME}.")) and any(
                    lock.locked() for lock in self._key_locks.values()
                )
                if known or busy_partial:
                    continue
                await asyncio.to_thread(_remove_any, child)
                removed.append(name)
            for sha in [s for s in files if not self._file(s).is_file()]:
                del files[sha]
            index["keys"] = {k: v for k, v in index.get("keys", {}).items() if v in files}
            await asyncio.to_thread(write_index, self._index_path, index)
        if removed:
            log.info("downloads: removed orphans %s", ", ".join(removed))
        return removed


def _remove_any(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
