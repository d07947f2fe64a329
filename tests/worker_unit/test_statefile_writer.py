"""``statefile.BackgroundWriter``: the worker loop's state files written on a thread of its own,
the last text per file winning, ``flush`` waiting for the disk."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from tcworker import statefile


def test_the_last_text_wins_and_none_removes(tmp_path: Path) -> None:
    writer = statefile.BackgroundWriter()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    for i in range(200):
        writer.submit(a, f"{i}\n")
    writer.submit(b, "here\n")
    assert writer.flush(10)
    assert a.read_text() == "199\n" and b.read_text() == "here\n"
    assert a.stat().st_mode & 0o777 == 0o600
    writer.submit(b, None)
    assert writer.flush(10)
    assert not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temp file left


def test_writes_happen_off_the_callers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    writers: list[str] = []
    real = statefile.write_private

    def slow(path: Path, text: str) -> None:
        writers.append(threading.current_thread().name)
        release.wait(10)
        real(path, text)

    monkeypatch.setattr(statefile, "write_private", slow)
    writer = statefile.BackgroundWriter()
    writer.submit(tmp_path / "s.txt", "x\n")  # returns while the write is held up
    assert not writer.flush(0.2)
    release.set()
    assert writer.flush(10)
    assert writers == ["tcw-state"] and (tmp_path / "s.txt").read_text() == "x\n"


def test_a_failed_write_is_logged_and_the_writer_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = statefile.BackgroundWriter()
    with caplog.at_level(logging.ERROR, logger="tcworker.statefile"):
        writer.submit(tmp_path / "missing-dir" / "s.txt", "x\n")
        assert writer.flush(10)
    assert "cannot update" in caplog.text
    writer.submit(tmp_path / "ok.txt", "y\n")
    assert writer.flush(10) and (tmp_path / "ok.txt").read_text() == "y\n"


def test_changes_within_the_window_cost_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trivial task changes the status file twice within milliseconds: one write for both."""
    written: list[str] = []
    real = statefile.write_private

    def counting(path: Path, text: str) -> None:
        written.append(text)
        real(path, text)

    monkeypatch.setattr(statefile, "write_private", counting)
    writer = statefile.BackgroundWriter(coalesce=0.5)
    for i in range(50):
        writer.submit(tmp_path / "s.txt", f"{i}\n")
    assert writer.flush(10)
    assert written == ["49\n"] and (tmp_path / "s.txt").read_text() == "49\n"


def test_without_a_thread_the_write_happens_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that refuses the state thread must not stop a claimed run: the file is written
    by the caller, as before the thread existed."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    writer = statefile.BackgroundWriter()
    writer.submit(tmp_path / "s.txt", "inline\n")
    assert (tmp_path / "s.txt").read_text() == "inline\n"
    assert writer.flush(1)


class _CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_changes_while_gathering_do_not_wake_the_thread(tmp_path: Path) -> None:
    """Only the first change of a window wakes the state thread; the others join what it is
    gathering (a wake-up per change cost the loop a GIL hand-over each, three per task)."""
    writer = statefile.BackgroundWriter(coalesce=0.5)
    writer._cond = counting = _CountingCondition()
    writer.submit(tmp_path / "s.txt", "first\n")
    for i in range(50):
        writer.submit(tmp_path / "s.txt", f"{i}\n")
        writer.submit(tmp_path / "t.txt", f"{i}\n")
    assert counting.notified == 1
    assert writer.flush(10)
    assert (tmp_path / "s.txt").read_text() == "49\n" and (tmp_path / "t.txt").read_text() == "49\n"
    writer.submit(tmp_path / "s.txt", "again\n")  # a new window after the write: woken again
    assert writer.flush(10) and (tmp_path / "s.txt").read_text() == "again\n"
