"""``sparedirs.DirRecycler``: a finished run's directory, emptied, becomes the next run's — only
when it is exactly what a fresh ``mkdir`` would give, and never with anything of the old run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers.ci import skip_or_fail

from tcworker.sparedirs import DirRecycler, inode_flags
from tcworker.taskdirs import SMALL_TREE_ENTRIES

PRIVATE = "generic-worker"


def _recycler(tmp_path: Path, keep: int = 2) -> DirRecycler:
    recycler = DirRecycler(tmp_path / ".spare" / "tasks", keep=keep)
    recycler.reset()
    return recycler


def _used_task_dir(path: Path) -> Path:
    """A task dir after a run: files, a nested tree, a symlink out, the private dir with files."""
    (path / PRIVATE).mkdir(parents=True)
    (path / PRIVATE / "secret.txt").write_text("the old run's")
    (path / "out" / "deep").mkdir(parents=True)
    (path / "out" / "deep" / "f.txt").write_text("x")
    (path / "top.txt").write_text("y")
    os.chmod(path / "out", 0o500)  # read-only for its owner: root removes it anyway
    os.symlink("/etc", path / "link-out")
    return path


def test_a_kept_directory_comes_back_empty_with_the_asked_modes(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    old = _used_task_dir(tmp_path / "task_a_0")
    inode = old.stat().st_ino
    assert recycler.keep(old, PRIVATE)
    assert not old.exists() and os.path.exists("/etc")  # the link went, not its target
    new = tmp_path / "task_b_0"
    assert recycler.take(new, 0o755, PRIVATE)
    assert new.stat().st_ino == inode  # the same directory: no mkdir, no rmdir
    assert os.listdir(new) == [PRIVATE] and os.listdir(new / PRIVATE) == []
    assert new.stat().st_mode & 0o7777 == 0o755 and (new / PRIVATE).stat().st_mode & 0o7777 == 0o700
    assert not recycler.take(tmp_path / "task_c_0", 0o755, PRIVATE)  # none left: the caller makes one


def test_a_scratch_directory_is_kept_without_a_private_subdirectory(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    runs = tmp_path / ".runs"
    (runs / "task_a_0").mkdir(parents=True)
    (runs / "task_a_0" / "live_backing.log").write_text("log")
    assert recycler.keep(runs / "task_a_0")
    assert recycler.take(runs / "task_b_0", 0o700)
    assert os.listdir(runs) == ["task_b_0"] and os.listdir(runs / "task_b_0") == []


def test_no_more_than_keep_are_kept(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path, keep=2)
    dirs = [tmp_path / f"d{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    assert [recycler.keep(d) for d in dirs] == [True, True, False]
    assert dirs[2].is_dir()  # left for the caller to remove
    assert len(os.listdir(recycler.root)) == 2


def _refused(recycler: DirRecycler, path: Path, private: str | None = PRIVATE) -> None:
    before = sorted(str(p) for p in path.rglob("*"))
    assert not recycler.keep(path, private)
    assert sorted(str(p) for p in path.rglob("*")) == before, "refused before anything was removed"
    assert os.listdir(recycler.root) == []


def test_a_directory_with_extended_attributes_or_an_acl_is_not_kept(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    path = _used_task_dir(tmp_path / "task_x_0")
    try:
        os.setxattr(path / PRIVATE, "user.tcw", b"1")
    except OSError as e:
        skip_or_fail(f"no user xattrs on {tmp_path}: {e}")
    _refused(recycler, path)
    os.removexattr(path / PRIVATE, "user.tcw")
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-m", "u:nobody:rwx", str(path)], check=True)
        _refused(recycler, path)


def test_a_directory_owned_by_someone_else_is_not_kept(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root to give a directory away")
    recycler = _recycler(tmp_path)
    path = _used_task_dir(tmp_path / "task_x_0")
    os.chown(path / PRIVATE, 65534, 65534)
    _refused(recycler, path)


def test_a_directory_with_inode_flags_is_not_kept(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    path = _used_task_dir(tmp_path / "task_x_0")
    if inode_flags(path) is None or not shutil.which("chattr"):
        skip_or_fail(f"{tmp_path} has no inode flags (chattr)")
    subprocess.run(["chattr", "+S", str(path)], check=True)  # synchronous updates for the next run?
    _refused(recycler, path)


def test_a_big_tree_a_symlink_or_a_missing_private_dir_is_not_kept(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    big = tmp_path / "task_big_0"
    (big / PRIVATE).mkdir(parents=True)
    for i in range(SMALL_TREE_ENTRIES + 1):
        (big / f"f{i}").write_text("")
    _refused(recycler, big)
    no_private = tmp_path / "task_np_0"
    no_private.mkdir()
    _refused(recycler, no_private)
    link = tmp_path / "task_link_0"
    os.symlink(big, link)
    assert not recycler.keep(link, PRIVATE) and link.is_symlink()


def test_take_never_replaces_a_directory_with_content(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    (tmp_path / "used").mkdir()
    assert recycler.keep(tmp_path / "used")
    leftover = tmp_path / "task_l_0"
    (leftover / "old").mkdir(parents=True)
    assert not recycler.take(leftover, 0o755)
    assert os.listdir(leftover) == ["old"]
    (tmp_path / "file").write_text("a file")
    assert not recycler.take(tmp_path / "file", 0o755)
    assert recycler.take(tmp_path / "task_ok_0", 0o755)  # the spare was kept for the next one


def test_reset_drops_spares_and_a_vanished_spare_is_skipped(tmp_path: Path) -> None:
    recycler = _recycler(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert recycler.keep(tmp_path / name)
    other = DirRecycler(recycler.root, keep=2)
    other.reset()  # another worker sharing the tasks dir starts: our spares are gone
    assert not os.path.exists(recycler.root) or os.listdir(recycler.root) == []
    assert not recycler.take(tmp_path / "task_n_0", 0o755)
    assert not (tmp_path / "task_n_0").exists()


def test_an_unusable_root_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    recycler = DirRecycler(tmp_path / "file" / "spare", keep=2)
    recycler.reset()
    (tmp_path / "d").mkdir()
    assert not recycler.keep(tmp_path / "d") and (tmp_path / "d").is_dir()
