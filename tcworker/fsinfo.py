"""Which file system a directory is on, and whether it is ext4 without a journal.

Why it matters: a worker creates and removes a few files and directories per task (the task
directory, its ``generic-worker/``, the worker's scratch directory and log; the local platform one
file per uploaded object). On ext4 *without a journal* the kernel's inode allocator skips every
inode freed in the last seconds (``recently_deleted`` in ``find_inode_bit``, which reads each
one's inode table block), so at a hundred tasks a second every new file scans thousands of them:
perf showed ~12–17 % of the worker's event-loop thread there at capacity 8, and drains of 300–500
trivial tasks ran 7–9 % faster at capacity 1 and 8–22 % at capacity 8 with the same directories on
a journaled ext4 (issue 15, session 12; the cost grows with how many inodes were freed lately, so
shorter drains show less). The worker (for ``tasksDir``) and ``tcworker queue serve`` (for its
data directory, one file per uploaded object) say so at start-up; ``bench/`` prints it by its figures.

Read from ``/proc/self/mountinfo`` (the mount holding the path), ``/sys/dev/block`` (the kernel's
name of its device) and ``/proc/fs/jbd2`` (one entry per journaled device); Linux only, and any
of it missing just makes the answer less precise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSystem:
    """``kind`` as the mount table names it (``ext4``, ``tmpfs``, …); ``journal`` is only known
    for ext4 (``None`` otherwise or when it cannot be told)."""

    mount_point: str
    kind: str
    device: str
    journal: bool | None

    @property
    def ext4_without_journal(self) -> bool:
        return self.kind == "ext4" and self.journal is False

    def describe(self) -> str:
        if self.kind == "ext4" and self.journal is not None:
            journal = "with" if self.journal else "without"
            return f"ext4 {journal} a journal ({self.device}, mounted at {self.mount_point})"
        return f"{self.kind} ({self.device}, mounted at {self.mount_point})"


def file_system_of(
    path: Path, *, proc: Path = Path("/proc"), sys_block: Path = Path("/sys/dev/block")
) -> FileSystem | None:
    """The file system holding ``path`` (an existing directory or file), or ``None`` when the
    mount table cannot be read or has no entry for its device."""
    try:
        st_dev = os.stat(path).st_dev
        mounts = (proc / "self" / "mountinfo").read_text()
    except OSError:
        return None
    wanted = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    real = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-")
            dev, mount_point, kind = fields[2], _unescape(fields[4]), fields[separator + 1]
        except (ValueError, IndexError):
            continue
        if dev != wanted or not _under(real, mount_point):
            continue
        if best is None or len(mount_point) > len(best[0]):
            best = (mount_point, kind, fields[separator + 2] if len(fields) > separator + 2 else "")
    if best is None:
        return None
    mount_point, kind, source = best
    device = _kernel_name(sys_block / wanted) or os.path.basename(source) or wanted
    journal = None
    if kind == "ext4" and (proc / "fs" / "ext4" / device).is_dir():
        try:
            journal = any(entry.startswith(f"{device}-") for entry in os.listdir(proc / "fs" / "jbd2"))
        except FileNotFoundError:  # no journaled file system mounted at all
            journal = False
        except OSError:
            journal = None
    return FileSystem(mount_point, kind, device, journal)


def hint_slow_file_creation(path: Path, what: str) -> None:
    """Log the start-up line for ``what`` (``tasksDir``, ``data dir``) at ``path`` when it is on
    ext4 without a journal (an operator can move it; nothing else changes); silent anywhere else,
    or when that cannot be told."""
    fs = file_system_of(path)
    if fs is None or not fs.ext4_without_journal:
        return
    log.info(
        "%s %s is on %s: each new file there makes the kernel scan the inodes freed in the last "
        "seconds, which slows a sustained stream of short tasks (8-22 %% fewer trivial tasks/s "
        "measured); a journaled file system or a tmpfs avoids it",
        what,
        path,
        fs.describe(),
    )


def _kernel_name(link: Path) -> str | None:
    """``vda``, ``loop0``, ``dm-1``: the name ``/proc/fs/ext4`` and ``/proc/fs/jbd2`` use."""
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def _under(path: str, mount_point: str) -> bool:
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")  # "/" holds all


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
