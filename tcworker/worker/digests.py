"""sha256 + sha512 of a byte stream, with the two hashes computed side by side on big chunks.

Object uploads carry both hashes of the plain bytes (the official upload helper's pair). sha512 is
the slowest step of publishing a large log (≈2.7 s per GiB here, more than gzip level 1), and
``hashlib`` releases the GIL on large buffers, so for chunks of ``PARALLEL_MIN`` bytes or more it
runs on a helper thread while the caller hashes sha256 and compresses the same chunk. Small
streams (the common trivial log) never start the thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

PARALLEL_MIN = 256 * 1024


class PlainDigests:
    """Feed with ``update`` in order; ``hexdigests`` once at the end. Use as a context manager
    (or call ``close``) so the helper thread is always stopped."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def update(self, data: bytes) -> None:
        """Hash ``data`` (must not be mutated afterwards: the helper may still be reading it)."""
        self._wait()
        if len(data) < PARALLEL_MIN:
            self._sha512.update(data)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="tcw-sha512")
            self._pending = self._pool.submit(self._sha512.update, data)
        self._sha256.update(data)

    def hexdigests(self) -> dict[str, str]:
        self._wait()
        return {"sha256": self._sha256.hexdigest(), "sha512": self._sha512.hexdigest()}

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
