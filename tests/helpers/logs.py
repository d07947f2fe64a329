"""Task logs for tests that drive engines and features directly: they keep what they are given.

Two shapes because two kinds of test read them back: ``RecordingLog`` is an engine's output sink
(bytes, chunk sizes, ``text`` as one string), ``LineLog`` is a feature's task log where each line's
level matters (``lines`` as ``(level, message)``, ``text()`` for assertion messages). Both record
worker lines through the one ``_record`` hook.
"""

from __future__ import annotations


class _LevelledLog:
    """``info`` / ``warn`` / ``error`` as a TaskLogWriter has them, each handed to ``_record``."""

    def _record(self, level: str, message: str) -> None:
        raise NotImplementedError

    def info(self, message: str) -> None:
        self._record("info", message)

    def warn(self, message: str) -> None:
        self._record("warn", message)

    def error(self, message: str) -> None:
        self._record("error", message)


class RecordingLog(_LevelledLog):
    """A task log that keeps its bytes (``data``) and its ``[taskcluster …]`` lines (``lines``)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.data = bytearray()
        self.size = 0
        self.biggest_chunk = 0
        self.lines: list[str] = []

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.biggest_chunk = max(self.biggest_chunk, len(data))
        if self.keep:
            self.data += data

    def _record(self, level: str, message: str) -> None:
        self.lines.append(f"{level}: {message}")

    @property
    def text(self) -> str:
        return bytes(self.data).decode(errors="replace")


class LineLog(_LevelledLog):
    """A task log for feature tests: keeps every line with its level (implements TaskLogWriter)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, data: bytes) -> None:
        self.lines.append(("raw", data.decode(errors="replace")))

    def _record(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def text(self) -> str:
        return "\n".join(f"{level}: {msg}" for level, msg in self.lines)
