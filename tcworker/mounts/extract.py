"""Safe extraction of mount archives into a fresh, worker-private directory.

An archive comes from whoever made the artifact or URL, so every format is unpacked under the
same rules: no entry may land outside the destination (absolute names and ``..`` are refused,
not rewritten), links are made only when they point inside it (hard links only to entries
already extracted), an entry is never written through a link, device files and FIFOs are
refused, setuid / setgid / sticky bits are dropped, and the bytes written are bounded by an
expansion budget (``MAX_EXPANSION_RATIO`` × archive size, at least ``MIN_EXPANSION_ALLOWANCE``)
checked against each entry's declared size *before* it is written and against the bytes
actually decoded while writing. Any violation raises ``UnsafeArchive`` (a bomb: ``ArchiveBomb``)
and the caller throws the destination away, so a refused archive leaves nothing behind.

tar uses the standard library's ``data`` extraction filter (PEP 706) while the archive is read
once, in order: it is decoded ahead in a thread (``Prefetcher``), re-hashed in another
(``ParallelHasher``), and member data is written straight from the decoded buffers, so a mount costs about what ``tar --zstd -xf``
does (``bench/mounts.py``). zip uses ``zipfile``, 7z ``py7zr`` (with its own
``max_extract_size``), RAR ``rarfile`` (stored entries natively, compressed ones through ``unar``
/ ``unrar`` / ``bsdtar``). Extraction is blocking: callers run it in a thread.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tcworker.mounts.formats import Prefetcher, open_decompressed, split_archive_format

MAX_EXPANSION_RATIO = 100
MIN_EXPANSION_ALLOWANCE = 256 << 20
COPY_BUFFER = 4 << 20


class UnsafeArchive(Exception):
    """The archive breaks a safety rule (or cannot be decoded); the message says which."""


class ArchiveBomb(UnsafeArchive):
    """The archive expands beyond the budget."""


class Budget:
    """Bytes an archive may still write."""

    def __init__(self, archive_size: int) -> None:
        self.limit = max(MIN_EXPANSION_ALLOWANCE, MAX_EXPANSION_RATIO * archive_size)
        self.left = self.limit

    def charge(self, n: int, what: str) -> None:
        if n > self.left:
            raise ArchiveBomb(
                f"{what} would expand the archive beyond {self.limit} bytes "
                f"({MAX_EXPANSION_RATIO}x its size, at least {MIN_EXPANSION_ALLOWANCE} bytes): refused "
                "as a decompression bomb"
            )
        self.left -= n


def budget_for(path: Path) -> Budget:
    return Budget(path.stat().st_size)


def checked_name(name: str) -> str:
    """``name`` as a clean relative path, or ``UnsafeArchive`` for absolute / escaping names."""
    if "\x00" in name:
        raise UnsafeArchive(f"entry {name!r} has a NUL byte in its name")
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"entry {name!r} has an absolute path")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchive(f"entry {name!r} points outside the destination")
    return "" if norm == "." else norm


def _link_target_inside(entry: str, target: str) -> bool:
    if target.startswith("/") or "\x00" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry), target))
    return joined != ".." and not joined.startswith("../")


class Destination:
    """Writes entries below ``root`` (an empty directory) following the module's rules."""

    def __init__(self, root: Path, budget: Budget) -> None:
        self.root = root
        self.budget = budget
        self._links: set[str] = set()

    def _path(self, name: str) -> Path:
        rel = checked_name(name)
        if not rel:
            return self.root
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self._links:
                raise UnsafeArchive(
                    f"entry {name!r} would be written through the link {'/'.join(parts[:i])!r}"
                )
        path = self.root / rel
        parent = path.parent
        # Belt and braces: no existing parent below root may be a symlink.
        probe = self.root
        for part in parts[:-1]:
            probe = probe / part
            if probe.is_symlink():
                raise UnsafeArchive(f"entry {name!r} would be written through a link")
        parent.mkdir(parents=True, exist_ok=True)
        return path

    def _clear(self, path: Path) -> None:
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        elif path.is_dir():
            raise UnsafeArchive(f"entry {path.relative_to(self.root)} replaces a directory")

    def directory(self, name: str, mode: int = 0o755) -> None:
        path = self._path(name)
        if path.is_symlink():
            raise UnsafeArchive(f"directory entry {name!r} is already a link")
        path.mkdir(exist_ok=True)
        os.chmod(path, (mode & 0o777) | 0o700)

    def file(self, name: str, source: IO[bytes], declared_size: int, mode: int = 0o644) -> None:
        self.budget.charge(declared_size, f"entry {name!r}")
        path = self._path(name)
        self._clear(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(COPY_BUFFER):
                written += len(chunk)
                if written > declared_size:
                    self.budget.charge(len(chunk), f"entry {name!r}")
                out.write(chunk)
        os.chmod(path, (mode & 0o777) | 0o600)

    def symlink(self, name: str, target: str) -> None:
        rel = checked_name(name)
        if not _link_target_inside(rel, target):
            raise UnsafeArchive(f"symlink {name!r} points outside the destination ({target!r})")
        path = self._path(name)
        self._clear(path)
        os.symlink(target, path)
        self._links.add(rel)

    def hardlink(self, name: str, target_name: str) -> None:
        target_rel = checked_name(target_name)
        source = self.root / target_rel
        if not target_rel or target_rel in self._links or not source.is_file() or source.is_symlink():
            raise UnsafeArchive(f"hard link {name!r} does not point to a file extracted before it")
        path = self._path(name)
        self._clear(path)
        os.link(source, path)


def _reject_special(name: str, mode: int) -> None:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise UnsafeArchive(f"entry {name!r} is a device file, FIFO or socket")


# ---- tar -----------------------------------------------------------------------------------------


def _tar_members(tar: tarfile.TarFile, budget: Budget) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        checked_name(member.name)
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"entry {member.name!r} is a device file or FIFO")
        if member.issym() and not _link_target_inside(checked_name(member.name), member.linkname):
            raise UnsafeArchive(
                f"symlink {member.name!r} points outside the destination ({member.linkname!r})"
            )
        if member.islnk():
            checked_name(member.linkname)
        if member.isreg():
            budget.charge(member.size, f"entry {member.name!r}")
        yield member


class _PrefetchedTarFile(tarfile.TarFile):
    """``tarfile`` reading a ``Prefetcher``: everything as the standard library does it (headers,
    the ``data`` filter, links, modes), except that a regular member's bytes are written to its
    file straight from the decoded chunks instead of through ``copyfileobj``'s fresh copies."""

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        source = self.fileobj
        if tarinfo.sparse is not None or not isinstance(source, Prefetcher):
            super().makefile(tarinfo, targetpath)
            return
        source.seek(tarinfo.offset_data)
        # As the standard library's open(targetpath, "wb"); the data filter's mode is set afterwards.
        fd = os.open(targetpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            if source.write_to(fd, tarinfo.size) != tarinfo.size:
                raise tarfile.ReadError("unexpected end of data")
        finally:
            os.close(fd)


def extract_tar(source: IO[bytes], dest: Path, budget: Budget) -> None:
    """Extract the tar stream ``source``. A ``Prefetcher`` (readable in order, seekable forward) is
    read in ``tarfile``'s ``r:`` mode and member data written straight from its chunks, where the
    ``r|`` mode's own stream buffer copied every byte several times; anything else as a stream."""
    try:
        if isinstance(source, Prefetcher):
            opened = _PrefetchedTarFile.open(fileobj=source, mode="r:")
        else:
            opened = tarfile.open(fileobj=source, mode="r|", bufsize=COPY_BUFFER)
        with opened as tar:
            tar.errorlevel = 2
            tar.copybufsize = COPY_BUFFER  # type: ignore[attr-defined]
            tar.extractall(dest, members=_tar_members(tar, budget), filter="data")
    except tarfile.FilterError as e:
        raise UnsafeArchive(f"tar entry refused: {e}") from e
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, UnsafeArchive):
            raise
        raise UnsafeArchive(f"cannot unarchive tar: {e}") from e


# ---- zip -----------------------------------------------------------------------------------------


def extract_zip(archive: Path, dest: Path, budget: Budget) -> None:
    out = Destination(dest, budget)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0xFFFF
                _reject_special(info.filename, mode)
                if info.is_dir():
                    out.directory(info.filename, mode or 0o755)
                elif stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise UnsafeArchive(f"symlink {info.filename!r} has an oversized target")
                    out.symlink(info.filename, zf.read(info).decode("utf-8", "surrogateescape"))
                else:
                    with zf.open(info) as src:
                        out.file(info.filename, src, info.file_size, mode or 0o644)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        OSError,
        ValueError,
    ) as e:
        if isinstance(e, UnsafeArchive):
            raise
        raise UnsafeArchive(f"cannot unarchive zip: {e}") from e


# ---- 7z ------------------------------------------------------------------------------------------


def extract_7z(archive: Path, dest: Path, budget: Budget) -> None:
    import py7zr
    import py7zr.exceptions

    try:
        with py7zr.SevenZipFile(archive, mode="r", max_extract_size=budget.left) as zf:
            links: set[str] = set()
            for info in zf.list():
                rel = checked_name(info.filename)
                parts = rel.split("/")
                if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                    raise UnsafeArchive(f"entry {info.filename!r} would be written through a link")
                if getattr(info, "is_symlink", False):
                    links.add(rel)
                elif not info.is_directory:
                    budget.charge(int(info.uncompressed or 0), f"entry {info.filename!r}")
        with py7zr.SevenZipFile(archive, mode="r", max_extract_size=budget.limit) as zf:
            zf.extractall(path=dest)
    except (py7zr.exceptions.ArchiveError, py7zr.exceptions.Bad7zFile, EOFError, OSError, ValueError) as e:
        if isinstance(e, UnsafeArchive):
            raise
        raise UnsafeArchive(f"cannot unarchive 7z: {e}") from e
    except Exception as e:  # py7zr raises a few bare exceptions for corrupt input
        if isinstance(e, UnsafeArchive):
            raise
        raise UnsafeArchive(f"cannot unarchive 7z: {type(e).__name__}: {e}") from e
    _verify_tree(dest)


# ---- rar -----------------------------------------------------------------------------------------

_RAR5_SYMLINKS = (1, 2, 3)  # unix symlink, windows symlink, junction
_RAR5_HARDLINKS = (4, 5)  # hard link, file copy


def extract_rar(archive: Path, dest: Path, budget: Budget) -> None:
    import rarfile

    out = Destination(dest, budget)
    try:
        with rarfile.RarFile(archive) as rf:
            for info in rf.infolist():
                name = info.filename
                mode = info.mode or 0
                redir = getattr(info, "file_redir", None)
                if info.is_dir():
                    out.directory(name, (mode & 0o777) or 0o755)
                elif redir and redir[0] in _RAR5_HARDLINKS:
                    out.hardlink(name, str(redir[2]))
                elif info.is_symlink():
                    target = str(redir[2]) if redir else rf.read(info).decode("utf-8", "surrogateescape")
                    out.symlink(name, target)
                else:
                    if stat.S_IFMT(mode):
                        _reject_special(name, mode)
                    with rf.open(info) as src:
                        out.file(name, src, int(info.file_size or 0), (mode & 0o777) or 0o644)
    except rarfile.Error as e:
        raise UnsafeArchive(f"cannot unarchive rar: {e}") from e
    except (EOFError, OSError, ValueError) as e:
        if isinstance(e, UnsafeArchive):
            raise
        raise UnsafeArchive(f"cannot unarchive rar: {e}") from e


# ---- shared ----------------------------------------------------------------------------------


def _verify_tree(dest: Path) -> None:
    """After a library extracted on its own: no link leaves ``dest``, no special file, no setuid."""
    root = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                if real != root and not real.startswith(root + os.sep):
                    raise UnsafeArchive(
                        f"symlink {os.path.relpath(path, dest)!r} points outside the destination"
                    )
                continue
            _reject_special(os.path.relpath(path, dest), st.st_mode)
            if st.st_mode & 0o7000:
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o777)


class ParallelHasher:
    """Hashes an open file in a thread of its own while the same file descriptor is extracted.

    The stored download is re-verified during extraction instead of in a pass before it, and in
    parallel rather than on the decoding thread, where sha256 made the decoder the slower half
    of the pipeline. It reads with ``pread`` on the extraction's own descriptor, so both see the
    very same file (no second ``open`` of the path) and the extraction's file position is
    untouched. ``result`` waits for the hash; ``stop`` abandons it.
    """

    def __init__(self, fd: int, digest: Any) -> None:
        import threading

        self._fd = fd
        self._digest = digest
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="mount-hash")
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        try:
            while not self._stop.is_set():
                chunk = os.pread(self._fd, COPY_BUFFER, offset)
                if not chunk:
                    return
                self._digest.update(chunk)
                offset += len(chunk)
        except BaseException as e:  # raised to the caller by result()
            self._error = e

    def result(self) -> None:
        """Wait until every byte is hashed (``OSError`` if reading failed)."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def extract(archive: Path, fmt: str, dest: Path, digest: Any = None) -> None:
    """Unpack ``archive`` (schema format ``fmt``) into the empty directory ``dest`` (blocking).
    On any error ``dest`` is emptied and ``UnsafeArchive`` raised. With ``digest`` (a hashlib
    object) every byte of a tar archive is hashed while it is extracted, for the caller to confirm."""
    container, compression = split_archive_format(fmt)
    budget = budget_for(archive)
    try:
        if container == "tar":
            with open(archive, "rb", buffering=0) as raw:
                hasher = ParallelHasher(raw.fileno(), digest) if digest is not None else None
                try:
                    source = io.BufferedReader(raw, COPY_BUFFER)
                    prefetch = Prefetcher(open_decompressed(source, compression))
                    try:
                        extract_tar(prefetch, dest, budget)  # type: ignore[arg-type]
                    finally:
                        prefetch.close()
                    if hasher is not None:
                        hasher.result()
                finally:
                    if hasher is not None:
                        hasher.stop()
        elif digest is not None:
            raise ValueError("inline hashing is only done for tar archives")
        elif container == "zip":
            extract_zip(archive, dest, budget)
        elif container == "7z":
            extract_7z(archive, dest, budget)
        elif container == "rar":
            extract_rar(archive, dest, budget)
        else:
            raise UnsafeArchive(f"unknown archive format {fmt!r}")
    except BaseException as e:
        _empty(dest)
        if isinstance(e, UnsafeArchive):
            raise
        if isinstance(e, Exception):
            raise UnsafeArchive(f"cannot unarchive {fmt}: {e}") from e
        raise


def decompress_file(source: Path, compression: str | None, target: Path) -> None:
    """Write ``source`` decoded with ``compression`` to the new file ``target`` (blocking), bounded
    by the same expansion budget as archives."""
    budget = budget_for(source)
    try:
        with open(source, "rb", buffering=COPY_BUFFER) as raw:
            stream = open_decompressed(raw, compression)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(COPY_BUFFER):
                    budget.charge(len(chunk), f"the {compression} content")
                    out.write(chunk)
    except BaseException as e:
        target.unlink(missing_ok=True)
        if isinstance(e, UnsafeArchive) or not isinstance(e, Exception):
            raise
        raise UnsafeArchive(f"cannot decompress {compression}: {e}") from e


def _empty(dest: Path) -> None:
    for child in list(dest.iterdir()) if dest.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
