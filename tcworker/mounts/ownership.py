"""Handing a mounted tree to a task user (multiuser engine) without being tricked by links.

Every entry is changed with ``lchown`` (a symlink itself, never what it points to) and the walk
never follows symlinked directories. A regular file with several hard links may be a link a
previous task made to a file it does not own; it is only re-owned when the kernel refuses such
links (``fs.protected_hardlinks = 1``, the default), so a cache can never be used to take over a
file outside it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _protected_hardlinks() -> bool:
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """``chown -R --no-dereference uid:gid path`` (blocking)."""
    protected = _protected_hardlinks()

    def one(p: str) -> None:
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not protected:
            return
        os.lchown(p, uid, gid)

    one(str(path))
    if not path.is_dir() or path.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            one(os.path.join(dirpath, name))
