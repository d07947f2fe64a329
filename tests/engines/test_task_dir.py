"""``make_task_dir``: a fresh task directory on every run's path, in the usual case without a
``stat`` first, and still replacing whatever a crashed run left under the same name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tcworker.engines.hostsandbox import make_task_dir


def _modes(path: Path) -> tuple[int, int]:
    return path.stat().st_mode & 0o777, (path / "generic-worker").stat().st_mode & 0o777


def test_fresh_directory_gets_its_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        make_task_dir(tmp_path / "task_a_0")
    finally:
        os.umask(old)
    assert _modes(tmp_path / "task_a_0") == (0o755, 0o700)
    assert os.listdir(tmp_path / "task_a_0") == ["generic-worker"]


def test_leftovers_of_every_kind_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("left by a crash")
    os.symlink("/nonexistent-tcw-target", tmp_path / "dangling")
    os.symlink(tmp_path / "elsewhere", tmp_path / "to-dir")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("not the task's")
    (tmp_path / "dir" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "dir" / "deep" / "er" / "f").write_text("x")
    for name in ("file", "dangling", "to-dir", "dir"):
        make_task_dir(tmp_path / name)
        path = tmp_path / name
        assert path.is_dir() and not path.is_symlink(), name
        assert os.listdir(path) == ["generic-worker"], name
        assert _modes(path) == (0o755, 0o700), name
    assert (tmp_path / "elsewhere" / "keep").read_text() == "not the task's"  # the link went, not its target


def test_a_leftover_is_left_alone_when_the_caller_removes_it_elsewhere(tmp_path: Path) -> None:
    """The engine's inline attempt: a leftover raises before anything is created or removed."""
    (tmp_path / "task_b_0" / "old").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        make_task_dir(tmp_path / "task_b_0", replace_leftover=False)
    assert os.listdir(tmp_path / "task_b_0") == ["old"]
