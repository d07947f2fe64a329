"""Download progress: a hook the downloads store reports to, and the rich bar ``tcworker local`` uses.

The worker itself logs nothing per chunk; an interactive front end installs a factory with
``set_progress_factory`` and gets one ``Progress`` per download that grows past
``SHOW_AFTER_BYTES`` (small downloads never flash a bar).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

SHOW_AFTER_BYTES = 4 << 20


class Progress(Protocol):
    def update(self, done: int) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int | None], Progress]
_factory: ProgressFactory | None = None


def set_progress_factory(factory: ProgressFactory | None) -> None:
    """Install (or with ``None`` remove) the process-wide progress factory."""
    global _factory
    _factory = factory


class DownloadProgress:
    """What the store calls while one download runs; creates the bar lazily past the threshold."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self._bar: Progress | None = None

    def add(self, n: int) -> None:
        self.done += n
        if self._bar is None and _factory is not None and self.done >= SHOW_AFTER_BYTES:
            self._bar = _factory(self.description, self.total)
        if self._bar is not None:
            self._bar.update(self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def rich_progress_factory(console: Any = None) -> ProgressFactory:
    """A factory drawing each download as a rich progress bar on ``console`` (stderr by default)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    class _Bar:
        def __init__(self, description: str, total: int | None) -> None:
            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total)

        def update(self, done: int) -> None:
            self._progress.update(self._task, completed=done)

        def close(self) -> None:
            self._progress.stop()

    return _Bar
