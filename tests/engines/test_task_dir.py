"""``make_task_dir``: a fresh task directory on every run's path, in the usual case without a
``stat`` first, and still replacing whatever a crashed run left under the same name."""

from __future__ import annotations

import os
from pathlib import Path

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
