"""Compression formats of mount content: one streaming reader per schema name, each from a library.

The payload schema names archive formats (``tar.zst``, ``zip``, ``7z``, ``rar`` …) for
directories and compression formats (``zst``, ``gz`` …) for file mounts. Every compression is
decoded by a maintained library (stdlib ``gzip``/``bz2``/``lzma``/``zlib``, ``zstandard``,
``lz4``, ``brotli``, ``python-snappy``, ``lzip``) and read as a stream, so a file of any size is
decoded in bounded memory. A format whose library is not installed (or has none: MinLZ ``mz``)
is reported by ``format_problem`` so the task is refused as malformed-payload naming it, rather
than failing half-way through a mount.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

READ_CHUNK = 4 << 20
# Largest output one decompression step may produce: keeps memory bounded even for a bomb.
MAX_STEP_OUTPUT = 4 << 20

# schema name → (human name, importable module that decodes it or None when no library exists)
COMPRESSIONS: dict[str, tuple[str, str | None]] = {
    "br": ("Brotli", "brotli"),
    "bz2": ("bzip2", "bz2"),
    "gz": ("gzip", "gzip"),
    "lz": ("lzip", "lzip"),
    "lz4": ("LZ4 frame", "lz4"),
    "mz": ("MinLZ", None),
    "sz": ("Snappy framed", "snappy"),
    "xz": ("xz", "lzma"),
    "zst": ("Zstandard", "zstandard"),
    "zz": ("zlib", "zlib"),
}
ARCHIVES: dict[str, tuple[str, str | None]] = {
    "tar": ("tar", "tarfile"),
    "zip": ("zip", "zipfile"),
    "7z": ("7-Zip", "py7zr"),
    "rar": ("RAR", "rarfile"),
}


def split_archive_format(fmt: str) -> tuple[str, str | None]:
    """``"tar.zst"`` → ``("tar", "zst")``; ``"zip"`` → ``("zip", None)``."""
    if fmt.startswith("tar."):
        return "tar", fmt[4:]
    return fmt, None


def _module_present(module: str | None) -> bool:
    return module is not None and importlib.util.find_spec(module) is not None


def format_problem(fmt: str, *, archive: bool) -> str | None:
    """Why ``fmt`` cannot be decoded on this worker, or ``None`` when it can."""
    parts: list[tuple[str, tuple[str, str | None]]] = []
    if archive:
        container, compression = split_archive_format(fmt)
        if container not in ARCHIVES:
            return f"unknown archive format {fmt!r}"
        parts.append((container, ARCHIVES[container]))
        if compression is not None:
            if compression not in COMPRESSIONS:
                return f"unknown compression {compression!r} in archive format {fmt!r}"
            parts.append((compression, COMPRESSIONS[compression]))
    else:
        if fmt not in COMPRESSIONS:
            return f"unknown compression format {fmt!r}"
        parts.append((fmt, COMPRESSIONS[fmt]))
    for name, (human, module) in parts:
        if module is None:
            return (
                f"format {fmt!r} needs a {human} ({name}) decoder, and no maintained Python library "
                "for it exists; this worker cannot mount it"
            )
        if not _module_present(module):
            return (
                f"format {fmt!r} needs the Python module {module!r} ({human}), which is not "
                "installed on this worker"
            )
    return None


class _StepReader(io.RawIOBase):
    """A readable stream over ``steps``: an iterator of decoded chunks (each ≤ ``MAX_STEP_OUTPUT``)."""

    def __init__(self, steps: Iterator[bytes]) -> None:
        self._steps = steps
        self._buffer = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while not self._buffer and not self._eof:
            try:
                self._buffer = next(self._steps)
            except StopIteration:
                self._eof = True
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _zlib_steps(source: IO[bytes]) -> Iterator[bytes]:
    d = zlib.decompressobj()
    while True:
        chunk = source.read(READ_CHUNK)
        data = chunk
        while True:
            out = d.decompress(data, MAX_STEP_OUTPUT)
            if out:
                yield out
            data = d.unconsumed_tail
            if not data:
                break
        if not chunk:
            rest = d.flush()
            if rest:
                yield rest
            if not d.eof:
                raise ValueError("zlib stream is truncated")
            return


def _brotli_steps(source: IO[bytes]) -> Iterator[bytes]:
    import brotli

    d = brotli.Decompressor()
    while True:
        chunk = source.read(READ_CHUNK)
        if not chunk:
            if not d.is_finished():
                raise ValueError("brotli stream is truncated")
            return
        out = d.process(chunk, output_buffer_limit=MAX_STEP_OUTPUT)
        if out:
            yield out
        while not d.can_accept_more_data():
            out = d.process(b"", output_buffer_limit=MAX_STEP_OUTPUT)
            if out:
                yield out


def _snappy_steps(source: IO[bytes]) -> Iterator[bytes]:
    import snappy

    d = snappy.StreamDecompressor()
    # Framed snappy chunks are at most 64 KiB decoded, so a 64 KiB read bounds each step.
    while chunk := source.read(64 << 10):
        out = d.decompress(chunk)
        if out:
            yield out
    d.flush()


def _lzip_steps(source: IO[bytes]) -> Iterator[bytes]:
    import lzip

    yield from lzip.decompress_file_like_iter(source, chunk_size=64 << 10)


def _zstd(source: IO[bytes]) -> IO[bytes]:
    import zstandard

    # Not wrapped in a BufferedReader: every consumer reads big chunks, and a buffer would only
    # add a copy of each decoded byte.
    return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
        source, read_size=READ_CHUNK, read_across_frames=True
    )


def _lz4(source: IO[bytes]) -> IO[bytes]:
    import lz4.frame

    return lz4.frame.LZ4FrameFile(source, mode="rb")  # type: ignore[return-value]


def _steps(factory: Callable[[IO[bytes]], Iterator[bytes]]) -> Callable[[IO[bytes]], IO[bytes]]:
    return lambda source: io.BufferedReader(_StepReader(factory(source)), READ_CHUNK)


OPENERS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "br": _steps(_brotli_steps),
    "bz2": lambda s: bz2.BZ2File(s, "rb"),  # type: ignore[dict-item]
    "gz": lambda s: gzip.GzipFile(fileobj=s, mode="rb"),  # type: ignore[dict-item]
    "lz": _steps(_lzip_steps),
    "lz4": _lz4,
    "sz": _steps(_snappy_steps),
    "xz": lambda s: lzma.LZMAFile(s, "rb"),  # type: ignore[dict-item]
    "zst": _zstd,
    "zz": _steps(_zlib_steps),
}


class Prefetcher(io.RawIOBase):
    """Reads ``source`` in a thread of its own, ``depth`` chunks ahead of the consumer; a stream that
    can seek forward (by skipping), so ``tarfile`` can read it in its ordinary ``r:`` mode.

    Decoding (zstandard, lzma … release the GIL) and hashing then run on one core while the
    consumer writes files on another — what ``tar --zstd`` gets from its ``zstd`` child process.
    The chunks are decoded into a small pool of buffers that go round and round (fresh memory
    for every chunk costs a page fault per page), and ``write_to`` writes straight from them, so
    member data is never copied in Python: ``tarfile``'s own ``r|`` stream re-joined and
    re-sliced its buffer on every read, which cost more than the decoding. Seeking backwards is
    refused (``OSError``), so a reader that would need it fails instead of reading wrong data.
    ``close`` stops the thread even when the consumer gave up half-way.
    """

    def __init__(self, source: IO[bytes], chunk: int = READ_CHUNK, depth: int = 4) -> None:
        import queue
        import threading

        self._queue: queue.Queue[memoryview | BaseException | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()  # buffers the consumer is done with
        self._stop = threading.Event()
        self._chunk = memoryview(b"")  # the decoded chunk being consumed (a pool buffer) …
        self._offset = 0  # … and how much of it is consumed
        self._position = 0  # bytes handed out (or skipped) so far
        self._done = False
        self._thread = threading.Thread(
            target=self._pump, args=(source, chunk, depth), daemon=True, name="prefetch"
        )
        self._thread.start()

    def _pump(self, source: IO[bytes], chunk: int, depth: int) -> None:
        import queue

        made = 0
        try:
            while not self._stop.is_set():
                if made < depth and self._free.empty():
                    buffer, made = bytearray(chunk), made + 1  # allocated here, off the consumer's path
                else:
                    try:
                        buffer = self._free.get(timeout=0.2)
                    except queue.Empty:
                        continue
                n = source.readinto(buffer)  # type: ignore[attr-defined]
                if not n:
                    break
                self._queue.put(memoryview(buffer)[:n])
            self._queue.put(None)
        except BaseException as e:  # handed to the consumer, raised there
            self._queue.put(e)

    def _fill(self) -> bool:
        """Make sure some unconsumed bytes are at hand; ``False`` at the end of the stream."""
        while self._offset >= len(self._chunk):
            if self._done:
                return False
            if self._chunk.obj is not None and len(self._chunk):
                spent = self._chunk.obj
                self._chunk.release()
                self._chunk = memoryview(b"")
                self._free.put(spent)  # type: ignore[arg-type]
            item = self._queue.get()
            if item is None:
                self._done = True
                return False
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._chunk, self._offset = item, 0
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise OSError("a decoded stream can only seek forward from its start or current position")
        if offset < self._position:
            raise OSError(f"a decoded stream cannot seek backwards (from {self._position} to {offset})")
        left = offset - self._position
        while left and self._fill():
            step = min(left, len(self._chunk) - self._offset)
            self._offset += step
            self._position += step
            left -= step
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (all that is left for ``None`` / negative), fewer only at the end:
        ``tarfile`` reads headers with it and takes a short read for a truncated archive."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(READ_CHUNK), b""))
        pieces: list[bytes] = []
        got = 0
        while got < size and self._fill():
            step = min(size - got, len(self._chunk) - self._offset)
            pieces.append(self._chunk[self._offset : self._offset + step].tobytes())
            self._offset += step
            got += step
        self._position += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not view or not self._fill():
            return 0
        n = min(len(view), len(self._chunk) - self._offset)
        view[:n] = self._chunk[self._offset : self._offset + n]
        self._offset += n
        self._position += n
        return n

    def write_to(self, fd: int, size: int) -> int:
        """Write the next ``size`` bytes to the file descriptor ``fd`` straight from the decoded
        chunks; returns how many there were (fewer only at the end of the stream)."""
        left = size
        while left and self._fill():
            step = min(left, len(self._chunk) - self._offset)
            with self._chunk[self._offset : self._offset + step] as view:
                done = 0
                while done < step:
                    done += os.write(fd, view[done:])
            self._offset += step
            self._position += step
            left -= step
        return size - left

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._chunk.release()
        super().close()


def open_decompressed(source: IO[bytes], compression: str | None) -> IO[bytes]:
    """A readable stream of ``source`` decoded with ``compression`` (``None`` = as it is)."""
    if compression is None:
        return source
    problem = format_problem(compression, archive=False)
    if problem:
        raise ValueError(problem)
    return OPENERS[compression](source)
