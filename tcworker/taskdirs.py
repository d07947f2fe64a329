"""Task directory names and the purge of old ones (spec/worker.md §1.5 item 7, §2.7).

The name doubles as the multiuser engine's OS user name, hence generic-worker's 20-character
limit: ``task_<taskId prefix>_<runId>`` with the taskId cut to ``20 − 6 − len(str(runId))``.
Engines call ``task_dir_name`` when they create the directory; the loop calls
``remove_task_dirs`` after each task and at start-up.

``remove_small_tree`` removes a directory tree of a few entries right where it is called, on the
event loop: a thread trip costs the worker more than such a removal — the thread takes the GIL
back after every system call while the loop runs, and those hand-offs were ~1,000 futex calls per
trivial task (strace, issue 15) — while a big tree, whose size nobody knows before walking it,
still goes to a thread.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from tcworker.errors import HostBroken

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 20
SMALL_TREE_ENTRIES = 64  # removed inline (bounded system calls); a bigger tree goes to a thread


def task_dir_name(task_id: str, run_id: int) -> str:
    """``task_<prefix>_<runId>``, at most 20 characters (generic-worker's task user name rule)."""
    run = str(run_id)
    keep = max(0, MAX_NAME_LENGTH - 6 - len(run))
    return f"task_{task_id[:keep]}_{run}"


def leftover_task_dirs(
    tasks_dir: Path, keep: Collection[str] = (), in_use: Callable[[str], bool] | None = None
) -> list[Path]:
    """The ``task_*`` directories ``remove_task_dirs`` would delete (a listing: cheap)."""
    try:
        entries = list(tasks_dir.iterdir())
    except OSError as e:
        log.warning("cannot list tasks directory %s: %s", tasks_dir, e)
        return []
    found: list[Path] = []
    for entry in sorted(entries):
        if not entry.name.startswith("task_") or entry.name in keep:
            continue
        if in_use is not None and in_use(entry.name):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        found.append(entry)
    return found


def remove_task_dirs(
    tasks_dir: Path, keep: Collection[str] = (), in_use: Callable[[str], bool] | None = None
) -> list[str]:
    """Delete every ``task_*`` *directory* in ``tasks_dir`` except the names in ``keep`` and
    those ``in_use`` claims (asked per entry after the listing, so a directory made meanwhile
    by its owner is never taken for a leftover).

    Plain files (and symlinks) named ``task_*`` survive (generic-worker's TestRemoveTaskDirs).
    Returns the names removed; failures are logged, never raised (a stuck directory must not
    stop the worker from claiming).
    """
    removed: list[str] = []
    for entry in leftover_task_dirs(tasks_dir, keep, in_use):
        try:
            shutil.rmtree(entry)
            removed.append(entry.name)
        except OSError as e:
            log.warning("cannot remove old task directory %s: %s", entry, e)
    return removed


def create_tasks_dir(tasks_dir: Path, mode: int = 0o755) -> None:
    """Create ``tasksDir`` at start-up; a host that cannot is broken: ``HostBroken`` (exit 69, as
    the spec and ``tcworker run --help`` say), not a config problem."""
    try:
        tasks_dir.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as e:
        raise HostBroken(f"cannot create tasksDir {str(tasks_dir)!r}: {e.strerror}") from e


def small_tree(path: Path | str, limit: int = SMALL_TREE_ENTRIES) -> list[tuple[str, bool]] | None:
    """Every entry under ``path`` as (path, is a directory), parents before children, or
    ``None`` when there are more than ``limit`` (the walk stops there). Symlinks are entries,
    never followed. Raises ``OSError`` when a directory cannot be listed."""
    entries: list[tuple[str, bool]] = []
    pending = [str(path)]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as it:
            for entry in it:
                is_dir = entry.is_dir(follow_symlinks=False)
                entries.append((entry.path, is_dir))
                if len(entries) > limit:
                    return None
                if is_dir:
                    pending.append(entry.path)
    return entries


def remove_entries(entries: list[tuple[str, bool]]) -> None:
    """Remove what ``small_tree`` listed, children before parents (raises ``OSError``)."""
    for name, is_dir in reversed(entries):
        if is_dir:
            os.rmdir(name)
        else:
            os.unlink(name)


def remove_small_tree(path: Path, limit: int = SMALL_TREE_ENTRIES) -> bool:
    """Remove ``path`` (a directory) when it holds at most ``limit`` entries in all; ``True``
    when it is gone. Symlinks are removed, never followed. ``False`` (nothing or part removed)
    tells the caller to ``shutil.rmtree`` it off the loop."""
    try:
        entries = small_tree(path, limit)
        if entries is None:
            return False
        remove_entries(entries)
        os.rmdir(path)
    except FileNotFoundError:
        return not os.path.lexists(path)
    except OSError:
        return False
    return True
