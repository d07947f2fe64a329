"""The cgroup detector on fake ``/sys/fs/cgroup`` trees (no root needed): v2 preferred, v1 for
what v2 lacks, nothing usable → ``None`` (tasks run without cgroups, the process tree kill only).

A fake tree is plain directories and files: the files the kernel would show are created by the
test; ``mkdir`` of the worker's parent group works as in a real hierarchy, only without the files
the kernel would add, which the tests create where a real kernel would have them.
"""

from __future__ import annotations

from pathlib import Path

from tcworker.engines import cgroups

SELF_HYBRID = "8:pids:/\n6:freezer:/\n4:memory:/outer/job\n0::/\n"
SELF_V2 = "0::/\n"


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v1(root: Path, controller: str, own: str = "") -> None:
    _touch(root / controller / "cgroup.procs")
    if own:
        _touch(root / controller / own / "cgroup.procs")


def test_no_cgroup_filesystem_means_no_cgroups(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()  # a v1 hierarchy that is of no use for limits or kill
    assert cgroups.detect(tmp_path, SELF_HYBRID) is None


def test_v1_only_uses_memory_pids_and_the_freezer(tmp_path: Path) -> None:
    for controller in ("memory", "pids", "freezer"):
        _v1(tmp_path, controller, "outer/job" if controller == "memory" else "")
    host = cgroups.detect(tmp_path, SELF_HYBRID)
    assert host is not None
    assert host.v2 is None
    assert (host.memory, host.pids, host.kill) == ("v1", "v1", "freezer")
    # Nested below the worker's own group, so the limits the worker runs under still apply.
    assert host.v1["memory"] == tmp_path / "memory/outer/job/tcworker"
    assert host.v1["pids"] == tmp_path / "pids/tcworker"
    assert "taskMaxMemoryMegabytes via cgroup v1 memory.limit_in_bytes" in host.describe()
    assert "kill via freeze + SIGKILL (v1 freezer)" in host.describe()


def test_hybrid_uses_cgroup_kill_from_v2_and_limits_from_v1(tmp_path: Path) -> None:
    _touch(tmp_path / "unified/cgroup.controllers", "hugetlb\n")
    _touch(tmp_path / "unified/cgroup.subtree_control", "")
    _touch(tmp_path / "unified/tcworker/cgroup.kill")  # what a kernel >= 5.14 shows in a new group
    for controller in ("memory", "pids", "freezer"):
        _v1(tmp_path, controller, "outer/job" if controller == "memory" else "")
    host = cgroups.detect(tmp_path, SELF_HYBRID)
    assert host is not None
    assert host.v2 == tmp_path / "unified/tcworker"
    assert (host.memory, host.pids, host.kill) == ("v1", "v1", "cgroup.kill")
    assert "freezer" not in host.v1  # cgroup.kill does the killing
    assert "kill via cgroup.kill" in host.describe()


def test_pure_v2_with_controllers_needs_no_v1(tmp_path: Path) -> None:
    _touch(tmp_path / "cgroup.controllers", "cpu io memory pids\n")
    _touch(tmp_path / "cgroup.subtree_control", "")
    _touch(tmp_path / "tcworker/cgroup.kill")
    _touch(tmp_path / "tcworker/cgroup.controllers", "memory pids\n")
    _touch(tmp_path / "tcworker/cgroup.subtree_control", "")
    host = cgroups.detect(tmp_path, SELF_V2)
    assert host is not None
    assert (host.memory, host.pids, host.kill) == ("v2", "v2", "cgroup.kill")
    assert host.v1 == {}
    # The controllers were enabled for the task groups, at the top and in the worker's parent.
    assert "+pids" in (tmp_path / "cgroup.subtree_control").read_text()  # the last one written
    assert "+pids" in (tmp_path / "tcworker/cgroup.subtree_control").read_text()
    assert "taskMaxProcesses via cgroup v2 pids.max" in host.describe()


def test_v2_without_controllers_and_no_v1_kills_but_does_not_limit(tmp_path: Path) -> None:
    _touch(tmp_path / "cgroup.controllers", "cpu io\n")
    _touch(tmp_path / "cgroup.subtree_control", "")
    _touch(tmp_path / "tcworker/cgroup.kill")
    host = cgroups.detect(tmp_path, SELF_V2)
    assert host is not None
    assert (host.memory, host.pids, host.kill) == (None, None, "cgroup.kill")
    assert "taskMaxMemoryMegabytes via nothing (not enforced)" in host.describe()


def test_hierarchies_where_no_group_can_be_made_fall_back_to_none(tmp_path: Path) -> None:
    """A hierarchy the worker cannot make its parent group in (here a file is in the way, as
    root ignores permission bits) is not used; with none left, tasks run without cgroups."""
    for controller in ("memory", "pids", "freezer"):
        _v1(tmp_path, controller)
        _touch(tmp_path / controller / "tcworker", "not a directory")
    assert cgroups.detect(tmp_path, "8:pids:/\n6:freezer:/\n4:memory:/\n") is None


def test_own_groups_reads_proc_self_cgroup() -> None:
    v2, v1 = cgroups.own_groups("12:cpu,cpuacct:/a\n4:memory:/outer/job\n1:name=systemd:/s\n0::/user.slice\n")
    assert v2 == "/user.slice"
    assert v1["memory"] == "/outer/job" and v1["cpu"] == "/a" and v1["cpuacct"] == "/a"


def test_limit_hits_are_reported_once_per_event(tmp_path: Path) -> None:
    host = cgroups.CgroupHost(
        v2=None, v1={"memory": tmp_path / "m", "pids": tmp_path / "p"}, memory="v1", pids="v1"
    )
    group = cgroups.TaskCgroup(host, "t", cgroups.TaskLimits(64, 64 << 20), [tmp_path / "m/t", tmp_path / "p/t"])
    _touch(tmp_path / "p/t/pids.events", "max 0\n")
    _touch(tmp_path / "m/t/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert group.new_limit_hits() == []
    _touch(tmp_path / "p/t/pids.events", "max 12\n")
    _touch(tmp_path / "m/t/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    messages = [h.message for h in group.new_limit_hits()]
    assert messages == [
        "task hit taskMaxProcesses=64 (pids.max): 12 forks refused",
        "task was OOM-killed: taskMaxMemoryMegabytes=64 (memory.limit_in_bytes): 1 process killed",
    ]
    assert group.new_limit_hits() == []  # already reported
