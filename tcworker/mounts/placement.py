"""Moving mounted trees into a task's file system and back without trusting what the task did.

A mount is prepared in a worker-private place (cache store, run scratch dir) and *moved* to its
target: the target's parents are created with the task user's rights (``Sandbox.make_dirs``,
so a target the task user could not create fails the mount, spec §2.5), the tree is renamed
into the real (symlink-resolved) parent directory through a file descriptor, and handed to the
task user (``Sandbox.give_to_task``). Its device and inode are remembered.

Taking a cache back happens after the task ran, when any component of the target's path may
have been replaced by a symlink. ``take_back`` therefore walks the remembered real path from
``/`` with ``O_NOFOLLOW`` on every component and moves the entry back only if it is still the
very directory that was placed (same device and inode, not a link); anything else is reported
as lost and the cache instance is dropped, so a task can never smuggle another directory (or a
link to one) into the cache store. A different file system (``EXDEV``) falls back to a copy.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path


class PlacementError(Exception):
    """The mount target cannot be used; the message says why."""


@dataclass(frozen=True)
class Placed:
    target: Path  # as the payload named it (normalised, absolute)
    real_parent: Path
    name: str
    device: int
    inode: int


def resolve_target(task_dir: Path, raw: str) -> Path:
    """The absolute, normalised target of a payload path (relative = below the task directory)."""
    return Path(posixpath.normpath(os.path.join(str(task_dir), raw)))


def _open_dir_nofollow(path: Path) -> int:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in path.parts[1:]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_then_remove(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
        src.unlink()


def place(src: Path, target: Path, *, replace_file: bool = False) -> Placed:
    """Move ``src`` to ``target``, whose parent exists (blocking). A file mount may replace an
    existing file; anything else already at the target fails the mount."""
    real_parent = Path(os.path.realpath(target.parent))
    name = target.name
    if not name or name in (".", ".."):
        raise PlacementError(f"{target} cannot be a mount target")
    try:
        fd = _open_dir_nofollow(real_parent)
    except OSError as e:
        raise PlacementError(f"cannot open the parent directory of {target}: {e.strerror}") from e
    try:
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise PlacementError(f"{target} already exists as a directory")
            if not replace_file:
                raise PlacementError(f"{target} already exists")
            os.unlink(name, dir_fd=fd)
        try:
            os.rename(src, name, dst_dir_fd=fd)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise PlacementError(f"cannot move the mount into {target}: {e.strerror}") from e
            _copy_then_remove(src, real_parent / name)
        placed = os.lstat(name, dir_fd=fd)
    finally:
        os.close(fd)
    return Placed(target, real_parent, name, placed.st_dev, placed.st_ino)


def take_back(placed: Placed, home: Path) -> bool:
    """Move a placed directory back to ``home`` (blocking); ``False`` when the task replaced,
    moved or linked it (it is then left where it is, to go with the task directory)."""
    try:
        fd = _open_dir_nofollow(placed.real_parent)
    except OSError:
        return False
    try:
        try:
            st = os.lstat(placed.name, dir_fd=fd)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (placed.device, placed.inode):
            return False
        home.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(placed.name, home, src_dir_fd=fd)
        except OSError as e:
            if e.errno != errno.EXDEV:
                return False
            _copy_then_remove(placed.real_parent / placed.name, home)
    finally:
        os.close(fd)
    return True
