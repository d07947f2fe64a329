"""``remove_small_tree``: a small tree goes inline, a big one is left for a thread; symlinks are
removed, never followed."""

from __future__ import annotations

from pathlib import Path

from tcworker.taskdirs import remove_small_tree


def test_small_tree_with_nested_dirs_and_a_symlink_is_removed_without_following(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    tree = tmp_path / "task"
    (tree / "generic-worker").mkdir(parents=True)
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_text("x")
    (tree / "link").symlink_to(outside)
    assert remove_small_tree(tree) is True
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "precious"


def test_big_tree_is_left_whole_for_the_thread(tmp_path: Path) -> None:
    tree = tmp_path / "task"
    tree.mkdir()
    for i in range(10):
        (tree / f"f{i}").write_text("x")
    assert remove_small_tree(tree, limit=5) is False
    assert len(list(tree.iterdir())) == 10  # nothing removed before the count was known


def test_missing_tree_counts_as_removed(tmp_path: Path) -> None:
    assert remove_small_tree(tmp_path / "nope") is True
