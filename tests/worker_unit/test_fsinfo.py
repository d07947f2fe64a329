"""``tcworker.fsinfo``: which file system a directory is on, read from a /proc and /sys laid out
as Linux does (a fake tree under tmp_path, for the cases this machine does not have), plus the
real /proc once. Loop-mounted ext4 with and without a journal: tests/e2e/test_e2e_tasks_dir_fs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from tcworker.fsinfo import file_system_of


def _tree(
    tmp_path: Path, lines: list[str], *, device: str = "vdz", journal: bool | None = None
) -> tuple[Path, Path]:
    """A fake ``/proc`` (mountinfo, fs/ext4, fs/jbd2) and ``/sys/dev/block`` for tmp_path's device."""
    proc, sys_block = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text("".join(line + "\n" for line in lines))
    (proc / "fs" / "ext4" / device).mkdir(parents=True)
    if journal is not None:
        (proc / "fs" / "jbd2").mkdir(parents=True)
        if journal:
            (proc / "fs" / "jbd2" / f"{device}-8").mkdir()
        (proc / "fs" / "jbd2" / "other-8").mkdir()  # another device's journal says nothing about ours
    sys_block.mkdir()
    (sys_block / _dev(tmp_path)).symlink_to(f"../../devices/virtual/block/{device}")
    return proc, sys_block


def _dev(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def _line(dev: str, mount_point: str, kind: str, source: str = "/dev/vdz") -> str:
    return f"29 1 {dev} / {mount_point} rw,relatime shared:1 - {kind} {source} rw"


def test_ext4_without_a_journal(tmp_path: Path) -> None:
    proc, sys_block = _tree(tmp_path, [_line(_dev(tmp_path), "/", "ext4")], journal=False)
    fs = file_system_of(tmp_path, proc=proc, sys_block=sys_block)
    assert fs is not None
    assert (fs.kind, fs.device, fs.mount_point, fs.journal) == ("ext4", "vdz", "/", False)
    assert fs.ext4_without_journal
    assert fs.describe() == "ext4 without a journal (vdz, mounted at /)"


def test_ext4_with_a_journal(tmp_path: Path) -> None:
    proc, sys_block = _tree(tmp_path, [_line(_dev(tmp_path), "/", "ext4")], journal=True)
    fs = file_system_of(tmp_path, proc=proc, sys_block=sys_block)
    assert fs is not None and fs.journal is True and not fs.ext4_without_journal
    assert fs.describe() == "ext4 with a journal (vdz, mounted at /)"


def test_no_journaled_file_system_at_all_means_no_journal(tmp_path: Path) -> None:
    proc, sys_block = _tree(tmp_path, [_line(_dev(tmp_path), "/", "ext4")], journal=None)  # no fs/jbd2
    fs = file_system_of(tmp_path, proc=proc, sys_block=sys_block)
    assert fs is not None and fs.ext4_without_journal


def test_the_longest_mount_of_the_same_device_wins(tmp_path: Path) -> None:
    dev = _dev(tmp_path)
    lines = [
        _line(dev, "/", "xfs"),
        _line(dev, str(tmp_path), "ext4"),
        _line("0:999", str(tmp_path / "proc"), "tmpfs"),  # longer, but another device: not ours
    ]
    proc, sys_block = _tree(tmp_path, lines, journal=False)
    fs = file_system_of(tmp_path / "proc", proc=proc, sys_block=sys_block)
    assert fs is not None and (fs.kind, fs.mount_point) == ("ext4", str(tmp_path))


def test_escaped_mount_points_are_read(tmp_path: Path) -> None:
    spaced = tmp_path / "a dir"
    spaced.mkdir()
    escaped = str(spaced).replace(" ", "\\040")
    proc, sys_block = _tree(
        tmp_path, [_line(_dev(tmp_path), "/", "ext4"), _line(_dev(tmp_path), escaped, "tmpfs")]
    )
    fs = file_system_of(spaced, proc=proc, sys_block=sys_block)
    assert fs is not None and (fs.kind, fs.mount_point, fs.journal) == ("tmpfs", str(spaced), None)


def test_unknown_when_the_mount_table_has_no_entry_or_cannot_be_read(tmp_path: Path) -> None:
    proc, sys_block = _tree(tmp_path, [_line("0:999", "/", "ext4")])
    assert file_system_of(tmp_path, proc=proc, sys_block=sys_block) is None
    assert file_system_of(tmp_path, proc=tmp_path / "nothing", sys_block=sys_block) is None
    assert file_system_of(tmp_path / "missing", proc=proc, sys_block=sys_block) is None


def test_the_real_proc_is_read() -> None:
    fs = file_system_of(Path("/proc"))
    assert fs is not None and (fs.kind, fs.mount_point, fs.journal) == ("proc", "/proc", None)
    assert not fs.ext4_without_journal
