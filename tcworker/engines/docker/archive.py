"""Safe extraction of a Docker ``get_archive`` tar stream into an artifact staging directory.

Docker hands artifacts out of a container as a tar stream whose first component is the base name
of the requested path. The stream comes from the task (it controls the container's file system),
so every member is treated as hostile: absolute names and ``..`` components are refused, only
regular files and directories are materialised, symlinks / devices / fifos inside a directory are
skipped (docker-worker uploaded only regular files), and nothing is ever written through a link.
This module is synchronous on purpose: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tcworker.engines.base import ArtifactFile, ArtifactInvalid

# Go's os.FileMode type bits, as Docker reports them in the X-Docker-Container-Path-Stat header.
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_TYPE_MASK = MODE_DIR | MODE_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)

_COPY_CHUNK = 1 << 20


class ChunkReader(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (the SDK's archive generator)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def stat_kind(stat: dict[str, object]) -> str:
    """``"directory"``, ``"symlink"``, ``"file"`` or ``"other"`` from a Docker path stat."""
    mode = int(stat.get("mode", 0))  # type: ignore[call-overload]
    if mode & MODE_DIR:
        return "directory"
    if mode & MODE_SYMLINK:
        return "symlink"
    if mode & MODE_TYPE_MASK:
        return "other"
    return "file"


@dataclass
class Extraction:
    """What ``extract`` produced: the files for upload and the members it deliberately skipped."""

    files: list[ArtifactFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _member_parts(name: str) -> list[str]:
    """The member's path components, refusing anything that could leave the extraction root."""
    if name.startswith("/") or "\\" in name:
        raise ArtifactInvalid(f"archive member {name!r} has an absolute or non-POSIX path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArtifactInvalid(f"archive member {name!r} leaves the artifact directory")
    return parts


def _write_regular(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> int:
    """Write one regular member to ``dest`` without following any link at ``dest``."""
    src = tf.extractfile(member)
    if src is None:
        raise ArtifactInvalid(f"archive member {member.name!r} has no content")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_COPY_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


def extract(
    chunks: Iterable[bytes],
    kind: str,
    root: Path,
    *,
    warn: Callable[[str], None] | None = None,
    max_file_bytes: int | None = None,
) -> Extraction:
    """Extract a ``get_archive`` stream for a ``file`` or ``directory`` artifact below ``root``.

    ``root`` must be a fresh, empty directory owned by the worker. For ``file`` the stream must
    hold exactly one regular file; for ``directory`` every regular file below the top directory is
    returned with its ``relative_name``. A regular file whose tar header says it is larger than
    ``max_file_bytes`` is not written: it is returned ``oversize`` (tarfile skips its content).
    Raises ``ArtifactInvalid`` for hostile or wrong-typed content.
    """

    def oversize(member: tarfile.TarInfo) -> bool:
        return max_file_bytes is not None and member.size > max_file_bytes

    result = Extraction()
    extracted: dict[str, Path] = {}
    with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks), _COPY_CHUNK), mode="r|") as tf:
        for member in tf:
            parts = _member_parts(member.name)
            if not parts:
                continue
            rel_parts = parts[1:]  # drop the requested path's own base name
            if kind == "file":
                if rel_parts or not member.isreg():
                    raise ArtifactInvalid(
                        f"expected a regular file but the container path holds {_describe(member)}"
                    )
                dest = root / "file"
                if oversize(member):
                    result.files.append(ArtifactFile("", dest, member.size, oversize=True))
                    continue
                size = _write_regular(tf, member, dest)
                result.files.append(ArtifactFile(relative_name="", path=dest, size=size))
                extracted[member.name] = dest
                continue
            if not rel_parts:
                if not member.isdir():
                    raise ArtifactInvalid(
                        f"expected a directory but the container path holds {_describe(member)}"
                    )
                continue
            rel = "/".join(rel_parts)
            dest = root.joinpath(*rel_parts)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if member.isreg() and oversize(member):
                result.files.append(ArtifactFile(rel, dest, member.size, oversize=True))
                continue
            if member.isreg():
                size = _write_regular(tf, member, dest)
            elif (
                member.islnk() and (source := extracted.get(posixpath.normpath(member.linkname))) is not None
            ):
                # A hard link to a file already extracted from this same stream: copy it.
                shutil.copyfile(source, dest, follow_symlinks=False)
                size = dest.stat().st_size
            else:
                result.skipped.append(rel)
                if warn is not None:
                    warn(f"skipping {rel!r} in directory artifact: {_describe(member)} is not uploaded")
                continue
            extracted[member.name] = dest
            result.files.append(ArtifactFile(relative_name=rel, path=dest, size=size))
    if kind == "file" and not result.files:
        raise ArtifactInvalid("the container path did not yield a regular file")
    return result


def _describe(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "a directory"
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a named pipe"
    if member.isreg():
        return "a regular file"
    return "a special file"
