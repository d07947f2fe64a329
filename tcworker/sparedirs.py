"""Emptied run directories kept for the next run instead of removed and made again.

Every run makes directories on its path — its scratch directory under ``tasksDir/.runs`` and, on
the simple engine, its task directory and that one's ``generic-worker/`` — and removes them when
it is over. On ext4 without a journal (this project's CI machine's root; a common choice for
throw-away worker disks) each ``mkdir`` cost 0.2–0.5 ms of system CPU here and each ``rmdir``
~0.1 ms: the inode allocator passes over every inode freed in the last seconds
(``recently_deleted``), and a worker that runs many short tasks frees a lot of them. Moving an
emptied directory aside and back costs two ``rename`` calls of ~15 µs. Making the directories
ahead of time on a thread did not help (the same CPU, spent beside the next run's command);
not making them again does: drains of trivial tasks at capacity 8, alternating with the code
before, 157–159 against 135–162 tasks/s, up to 1.26 ms less worker CPU per task (see the
README's fourteenth-session notes).

A ``DirRecycler`` keeps up to ``keep`` emptied directories under its own ``root`` (mode 0700,
in ``tasksDir/.spare/``, which no task directory sweep looks at). ``keep`` takes a directory
that a run has finished with, only when it is exactly what a fresh ``mkdir`` would give after
emptying: a real directory (no symlink) owned by the worker's user and group, no extended
attributes (so no ACL), the same inode flags as a fresh directory there (``chattr``: no
synchronous, append-only or immutable leftovers), and at most ``SMALL_TREE_ENTRIES`` entries
to remove; anything else is left for the caller to remove as before. The checks come before
anything is removed. ``take`` renames a kept one into place and sets its mode, as ``mkdir`` and
``chmod`` would; when none is kept, or the destination already exists with content, it returns
``False`` and the caller makes the directory as it always did. A task directory is only kept when
every process of its run is known to be gone (its cgroup was emptied and removed): no process
of a finished run can reach the next run's directory.

``reset`` (start-up) removes what an earlier worker process left in ``root``. Another worker
sharing the tasks directory may remove our spares meanwhile: ``take`` then finds none (or
one vanished) and the caller makes a directory; nothing fails.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import os
import shutil
import stat
import struct
from pathlib import Path

from tcworker.taskdirs import SMALL_TREE_ENTRIES, remove_entries, small_tree

_FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, for every architecture this project runs on (long → int)
# Flags the file system sets by itself on a directory that grew (ext4's hashed index): ignored.
_SELF_SET_FLAGS = 0x00001000 | 0x00080000  # EXT4_INDEX_FL, EXT4_EXTENTS_FL


def inode_flags(path: str | Path) -> int | None:
    """The ``chattr`` flags of a directory (``None`` where the file system has none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4)
    except OSError as e:
        if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise
    finally:
        os.close(fd)
    return struct.unpack("I", buf)[0] & ~_SELF_SET_FLAGS


class DirRecycler:
    """Emptied directories of finished runs, kept under ``root`` for ``take`` (thread-safe:
    ``take`` on the event loop, ``keep`` from a clean-up thread or the loop)."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self._keep = keep
        self._ready: collections.deque[str] = collections.deque()
        self._names = itertools.count()
        self._owner = (os.geteuid(), os.getegid())
        self._fresh_flags: int | None = None
        self._usable = False

    def reset(self) -> None:
        """Start-up (blocking): drop what an earlier process left in ``root``, make ``root`` and
        learn the flags a fresh directory gets there. On any failure nothing is ever kept."""
        self._ready.clear()
        self._usable = False
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.mkdir(mode=0o700)
            try:
                self._fresh_flags = inode_flags(probe)
            finally:
                probe.rmdir()
        except OSError:
            return
        self._usable = True

    def take(self, dest: Path, mode: int, private: str | None = None, private_mode: int = 0o700) -> bool:
        """Rename a kept directory to ``dest`` with ``mode`` (and its ``private`` subdirectory's
        mode): ``True`` when ``dest`` is now that fresh, empty directory. ``False``: nothing
        kept, or ``dest`` exists with content or is not a directory (left as it was) — make it
        as before."""
        while True:
            try:
                spare = self._ready.popleft()
            except IndexError:
                return False
            try:
                os.rename(spare, dest)  # replaces an empty leftover directory, never a full one
            except FileNotFoundError:
                if not os.path.isdir(dest.parent):
                    self._ready.appendleft(spare)
                    return False
                continue  # removed by another worker's reset: the next one, if any
            except OSError:
                self._ready.appendleft(spare)
                return False
            os.chmod(dest, mode)
            if private is not None:
                os.chmod(os.path.join(dest, private), private_mode)
            return True

    def keep(self, path: Path, private: str | None = None) -> bool:
        """Empty ``path`` (its ``private`` subdirectory stays, emptied) and keep it: ``True`` when
        ``path`` is gone. ``False``: not kept (full, or not as a fresh directory would be, or on
        an error) and maybe partly emptied — the caller removes it as before."""
        if not self._usable or len(self._ready) >= self._keep:
            return False
        try:
            if not self._as_fresh(path) or (private is not None and not self._as_fresh(path / private)):
                return False
            entries = small_tree(path, SMALL_TREE_ENTRIES)
            if entries is None:
                return False
            if private is not None:
                inner = str(path / private)
                entries = [e for e in entries if e[0] != inner]
            remove_entries(entries)
            os.chmod(path, 0o700)
            spare = str(self.root / f"{os.getpid()}-{next(self._names)}")
            os.rename(path, spare)
        except OSError:
            return False
        self._ready.append(spare)
        return True

    def _as_fresh(self, path: Path) -> bool:
        """Owned by us, a real directory, no extended attribute, the flags of a fresh one."""
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or (st.st_uid, st.st_gid) != self._owner:
            return False
        with contextlib.suppress(OSError):  # no xattr support: none can be there
            if os.listxattr(path, follow_symlinks=False):
                return False
        return inode_flags(path) == self._fresh_flags
