"""sha256 + sha512 of a byte stream, hashed on a helper thread while the caller (de)compresses.

Shared by both programs: the worker hashes the plain bytes of a log while it gzips them, and the
object service hashes the decoded bytes of an upload while it inflates and stores them. Object
uploads carry both hashes of the plain bytes (the official upload helper's pair). Hashing
costs about as much as gzip level 1 (≈3.6 s vs ≈3.3 s per GiB here) and ``hashlib`` and ``zlib``
both release the GIL on large buffers, so for chunks of ``PARALLEL_MIN`` bytes or more the two
hashes run on a helper thread while the caller compresses the same chunk: a big log is packed at
the speed of the slower half instead of the sum (likewise for inflating on the server). Small streams (the common trivial log) never
start the thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

PARALLEL_MIN = 256 * 1024


class PlainDigests:
    """Feed with ``update`` in order; ``hexdigests`` once at the end. Use as a context manager
    (or call ``close``) so the helper thread is always stopped. ``sha512=False`` computes only
    sha256 (enough for the object protocol, which needs one of the two, and the slowest half of
    the pair: ~2× sha256's cost with the CPU's SHA extensions)."""

    def __init__(self, *, sha512: bool = True) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if sha512 else None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def update(self, data: bytes) -> None:
        """Hash ``data`` (must not be mutated afterwards: the helper may still be reading it)."""
        self._wait()
        if len(data) < PARALLEL_MIN:
            self._hash(data)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tcw-hash")
        self._pending = self._pool.submit(self._hash, data)

    def _hash(self, data: bytes) -> None:
        self._sha256.update(data)
        if self._sha512 is not None:
            self._sha512.update(data)

    def hexdigests(self) -> dict[str, str]:
        self._wait()
        out = {"sha256": self._sha256.hexdigest()}
        if self._sha512 is not None:
            out["sha512"] = self._sha512.hexdigest()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> PlainDigests:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
