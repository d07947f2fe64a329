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

    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_CHUNK, read_across_frames=True)
    return io.BufferedReader(reader, READ_CHUNK)  # type: ignore[arg-type]


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
    """Reads ``source`` in a thread of its own, ``depth`` chunks ahead of the consumer.

    Decoding (zstandard, lzma … release the GIL) and hashing then run on one core while the
    consumer writes files on another — what ``tar --zstd`` gets from its ``zstd`` child process.
    ``close`` stops the thread even when the consumer gave up half-way.
    """

    def __init__(self, source: IO[bytes], chunk: int = READ_CHUNK, depth: int = 4) -> None:
        import queue
        import threading

        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self._stop = threading.Event()
        self._buffer = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._pump, args=(source, chunk), daemon=True, name="prefetch")
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, source: IO[bytes], chunk: int) -> None:
        try:
            while not self._stop.is_set():
                data = source.read(chunk)
                if not data:
                    break
                if not self._put(data):
                    return
            self._put(None)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            if self._done:
                return 0
            item = self._queue.get()
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._buffer = memoryview(item)
        view = memoryview(b).cast("B")
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        super().close()


def open_decompressed(source: IO[bytes], compression: str | None) -> IO[bytes]:
    """A readable stream of ``source`` decoded with ``compression`` (``None`` = as it is)."""
    if compression is None:
        return source
    problem = format_problem(compression, archive=False)
    if problem:
        raise ValueError(problem)
    return OPENERS[compression](source)
