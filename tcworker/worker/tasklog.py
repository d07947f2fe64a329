"""The task log: command output and ``[taskcluster …]`` lines, streamed to a file and fanned out.

This is the log task authors read (design G9), published as ``public/logs/live_backing.log``.
It is written straight to disk as it arrives (never held whole in memory) and copied to any
number of listeners (``tcworker local`` prints it live; the live-log feature follows the file).
It is also the one place where secrets are masked (``add_secrets``): whatever feeds it — the
worker core with the credentials, the docker engine with ``encryptedEnv`` values — the disk copy,
the live log and every listener see the same masked bytes.
Worker lines use generic-worker's exact formats (spec/worker.md §1.11, GW ``TestLogFormat``):
``[taskcluster 2017-01-25T23:31:13.787Z] ``, ``[taskcluster:warn 2017-01-25T23:31:13.787Z] ``
and ``[taskcluster:error] `` (no timestamp), one prefix per line of a multi-line message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tcworker import tctime
from tcworker.logmask import SecretMasker

log = logging.getLogger(__name__)

Listener = Callable[[bytes], None]


def format_lines(level: str, message: str, timestamp: str | None = None) -> str:
    """The worker-written lines for ``message`` at ``level`` (``info`` | ``warn`` | ``error``)."""
    ts = timestamp if timestamp is not None else tctime.to_json(tctime.now())
    if level == "info":
        prefix = f"[taskcluster {ts}] "
    elif level == "warn":
        prefix = f"[taskcluster:warn {ts}] "
    elif level == "error":
        prefix = "[taskcluster:error] "
    else:
        raise ValueError(f"unknown task log level {level!r}")
    lines = message.split("\n") if message else [""]
    return "".join(prefix + line + "\n" for line in lines)


class TaskLog:
    """One run's task log file plus live listeners. Safe to write from engine threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._on_close: list[Callable[[], None]] = []
        self._at_line_start = True
        self._masker: SecretMasker | None = None
        self.bytes_written = 0

    def add_secrets(self, values: list[str]) -> None:
        """Mask these values and their URL-encoded and base64 forms in everything written from
        now on (credentials, decrypted ``encryptedEnv``, …; ``tcworker.logmask``)."""
        with self._lock:
            if self._masker is None:
                self._masker = SecretMasker(values, encoded=True)
            else:
                self._masker.add(values)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the closing thread) once the log is complete and closed."""
        with self._lock:
            if self._file is None:
                run_now = True
            else:
                self._on_close.append(callback)
                run_now = False
        if run_now:
            callback()

    def add_listener(self, listener: Listener) -> None:
        """Receive every chunk written from now on (called under the log's lock: keep it quick)."""
        with self._lock:
            self._listeners.append(listener)

    def write(self, data: bytes) -> None:
        """Raw command output, unmodified."""
        if not data:
            return
        with self._lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        if self._file is None:
            return
        if self._masker is not None:
            self._at_line_start = data.endswith(b"\n")
            data = self._masker.feed(data)
            if not data:
                return
        self._emit_locked(data)

    def _emit_locked(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        self.bytes_written += len(data)
        if self._masker is None:
            self._at_line_start = data.endswith(b"\n")
        for listener in self._listeners:
            try:
                listener(data)
            except Exception:  # a broken viewer must not break the task
                log.exception("task log listener failed")

    def _line(self, level: str, message: str) -> None:
        text = format_lines(level, message)
        with self._lock:
            if not self._at_line_start:
                # Command output without a final newline: keep our line on its own line.
                text = "\n" + text
            self._write_locked(text.encode("utf-8", "replace"))

    def info(self, message: str) -> None:
        self._line("info", message)

    def warn(self, message: str) -> None:
        self._line("warn", message)

    def error(self, message: str) -> None:
        self._line("error", message)

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                if self._masker is not None:
                    tail = self._masker.flush()
                    if tail:
                        self._emit_locked(tail)
                self._file.close()
                self._file = None
            callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("task log close callback failed")
