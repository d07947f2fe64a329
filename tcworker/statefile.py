"""Small private state files on the host: atomic replace, mode 0600 (worker counters, image and cache indexes).

Written atomically (temp file + rename) and chmod 0600 so a crash never leaves half a file and
tasks cannot read it; a missing or corrupt file reads as empty, because both indexes are caches
of facts Docker and the file system can rebuild.

The worker loop rewrites two of them around every task (its status file and the resolved-task
count). On ext4 a rename over an existing file starts the new file's writeback at once
(``auto_da_alloc``): ~0.3 ms of system time per write here, three writes per trivial task — about a
tenth of the worker's CPU per task, all of it on the event loop. ``BackgroundWriter`` does those
writes on a thread of its own instead (the loop only hands over the text; the last text per file
wins) and ``flush`` waits for them where it matters (the worker's exit). It gathers what arrives
within ``COALESCE`` of the first change and writes only the latest text: a trivial task changes the
status file twice within a few milliseconds, and each write on another thread still costs the
loop a few hand-overs of the GIL — paid once per ``COALESCE`` instead of three times per task.
For the same reason a change that arrives while the thread is already gathering does not wake
it (each wake-up is a thread switch and a GIL hand-over for nothing: it would only go back to
waiting out the window).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COALESCE = 0.05  # seconds the state thread waits for more changes before it writes


def read_state(path: Path) -> dict[str, Any]:
    """The file's JSON object, or ``{}`` when it is missing or unreadable (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable state file %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically with ``data`` as JSON (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(data, indent=1, sort_keys=True))


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 (a task user must not read it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Writes state files (``write_private``; ``None`` removes the file) on one daemon thread,
    in the order they were handed over per file, skipping texts superseded meanwhile."""

    def __init__(self, coalesce: float = COALESCE) -> None:
        self._coalesce = coalesce
        self._pending: dict[Path, str | None] = {}
        self._cond = threading.Condition()
        self._writing = False
        self._flushing = 0  # callers waiting in ``flush``: write at once
        self._thread: threading.Thread | None = None

    def submit(self, path: Path, text: str | None) -> None:
        """Schedule ``path`` to hold ``text`` (or to be removed); never blocks on the disk."""
        with self._cond:
            wake = not self._pending  # else the thread is already gathering: no wake-up needed
            self._pending[path] = text
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="tcw-state", daemon=True)
                try:
                    thread.start()
                except RuntimeError as e:  # no thread to be had: write it here, as before
                    log.warning("no state thread (%s); writing %s inline", e, path)
                    self._pending.pop(path)
                    self._write(path, text)
                    return
                self._thread = thread
            if wake:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (blocking); False on timeout."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                self._cond.wait_for(lambda: self._flushing > 0, self._coalesce)  # gather changes
                batch, self._pending = self._pending, {}
                self._writing = True
            for path, text in batch.items():
                self._write(path, text)
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    @staticmethod
    def _write(path: Path, text: str | None) -> None:
        try:
            if text is None:
                path.unlink(missing_ok=True)
            else:
                write_private(path, text)
        except Exception as e:  # the thread must outlive any one failed write
            log.error("cannot update %s: %s", path, e)
