"""Task directory names and the purge of old ones (spec/worker.md §1.5 item 7, §2.7).

The name doubles as the multiuser engine's OS user name, hence generic-worker's 20-character
limit: ``task_<taskId prefix>_<runId>`` with the taskId cut to ``20 − 6 − len(str(runId))``.
Engines call ``task_dir_name`` when they create the directory; the loop calls
``remove_task_dirs`` after each task and at start-up.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from tcworker.errors import HostBroken

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 20


def task_dir_name(task_id: str, run_id: int) -> str:
    """``task_<prefix>_<runId>``, at most 20 characters (generic-worker's task user name rule)."""
    run = str(run_id)
    keep = max(0, MAX_NAME_LENGTH - 6 - len(run))
    return f"task_{task_id[:keep]}_{run}"


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
    try:
        entries = list(tasks_dir.iterdir())
    except OSError as e:
        log.warning("cannot list tasks directory %s: %s", tasks_dir, e)
        return removed
    for entry in sorted(entries):
        if not entry.name.startswith("task_") or entry.name in keep:
            continue
        if in_use is not None and in_use(entry.name):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
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
