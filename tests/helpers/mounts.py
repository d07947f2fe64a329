"""Archives, compressed blobs and payload pieces for the mounts tests, made with the same
libraries the worker decodes them with (the RAR fixtures come from rarfile's own test suite,
since no free tool writes RAR: see data/RARFILE-LICENSE)."""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import brotli
import lz4.frame
import lzip
import py7zr
import snappy
import zstandard

DATA = Path(__file__).resolve().parents[1] / "mounts" / "data"


def _snappy(data: bytes) -> bytes:
    out = io.BytesIO()
    snappy.stream_compress(io.BytesIO(data), out)
    return out.getvalue()


COMPRESS = {
    "br": brotli.compress,
    "bz2": bz2.compress,
    "gz": gzip.compress,
    "lz": lambda d: bytes(lzip.compress_to_buffer(d)),
    "lz4": lz4.frame.compress,
    "sz": _snappy,
    "xz": lzma.compress,
    "zst": lambda d: zstandard.ZstdCompressor().compress(d),
    "zz": zlib.compress,
}


def tar_bytes(entries: Iterable[tuple[str, Any]]) -> bytes:
    """A tar of (name, bytes) files, (name, ("symlink"|"hardlink", target)) links, (name, None) dirs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def sevenz_bytes(entries: Iterable[tuple[str, bytes]], tmp: Path) -> bytes:
    path = tmp / "archive.7z"
    with py7zr.SevenZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(data, name)
    return path.read_bytes()


def archive(fmt: str, entries: list[tuple[str, bytes]], tmp: Path) -> bytes:
    """``entries`` packed in the schema format ``fmt`` (rar: the fixture with the same files)."""
    if fmt == "zip":
        return zip_bytes(entries)
    if fmt == "7z":
        return sevenz_bytes(entries, tmp)
    raw = tar_bytes(entries)
    return raw if fmt == "tar" else COMPRESS[fmt[4:]](raw)


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zero_stream_tar_zst(size: int) -> bytes:
    """A tar.zst holding one file of ``size`` zero bytes, streamed (a decompression bomb)."""
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=3)
    with cctx.stream_writer(out, closefd=False) as w:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        w.write(info.tobuf(format=tarfile.GNU_FORMAT))
        chunk = bytes(1 << 20)
        left = size
        while left:
            n = min(left, len(chunk))
            w.write(chunk[:n])
            left -= n
        w.write(bytes(1024))
    return out.getvalue()


def shell_checks(checks: list[tuple[str, str]]) -> list[list[str]]:
    """One command asserting ``cat path`` == expected for every pair, then printing MOUNTS-OK."""
    lines = ["set -e"]
    for path, expected in checks:
        lines.append(
            f"test \"$(cat '{path}')\" = '{expected}' || {{ echo \"MISMATCH {path}: $(cat '{path}')\"; exit 1; }}"
        )
    lines.append("echo MOUNTS-OK")
    return [["/bin/sh", "-c", "\n".join(lines)]]
