"""Issue 15 (multiuser ≤ 10 ms over simple): how a multiuser command is started — a ``vfork``ed
perl stub that joins the task's cgroup as root with an empty environment, drops every privilege
and ``execve``s the command (``spawnstub.StubLaunch``) — and what was moved off the task's path
(the per-command sweep finishes in the background; the pool tops up after the run).

Real task users, real processes, real cgroups; run as root."""

# Deliberately blocking checks between awaits (files, a stand-in process): nothing else runs.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC230, ASYNC251

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import command_env, run_context, unique_sleep
from helpers.logs import RecordingLog

from tcworker.engines import spawnstub
from tcworker.engines.base import EXIT_NOT_STARTED
from tcworker.engines.multiuser import MultiuserEngine


async def run(box: Any, argv: list[str], **env: str) -> tuple[Any, str]:
    log = RecordingLog()
    result = await box.execute(argv, command_env(box, **env), log)
    return result, log.text


def test_the_stub_is_usable_on_this_host() -> None:
    """Else every multiuser command silently falls back to forking the worker."""
    assert spawnstub.launch_available(), f"no perl or unknown machine {os.uname().machine}"


async def test_every_id_is_the_task_users_and_no_privilege_is_left(box: Any) -> None:
    uid = pwd.getpwnam(box.task_dir.name).pw_uid
    gid = pwd.getpwnam(box.task_dir.name).pw_gid
    result, out = await run(
        box, ["grep", "-E", "^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb):", "/proc/self/status"]
    )
    assert result.exit_code == 0, out
    status = {line.split(":")[0]: line.split()[1:] for line in out.splitlines()}
    assert status["Uid"] == [str(uid)] * 4  # real, effective, saved, filesystem
    assert status["Gid"] == [str(gid)] * 4
    assert status["Groups"] == []
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[caps][0], 16) == 0, out


async def test_the_task_environment_never_reaches_the_root_stub(box: Any) -> None:
    """A task's PERL5OPT / PERL5LIB / LD_PRELOAD apply to its own commands (as the task user),
    never to the stub that runs as root before the switch."""
    lib = Path("/tmp") / f"tcw-perl5lib-{os.getpid()}"
    lib.mkdir(mode=0o755, exist_ok=True)
    marker = lib / "loaded-by"
    try:
        (lib / "TcwSpy.pm").write_text(
            'package TcwSpy; if (open(my $f, ">>", "'
            + str(marker)
            + '")) { print {$f} "$<\\n"; close($f) } 1;\n'
        )
        os.chmod(marker.parent, 0o1777)  # the task user may write the marker (sticky /tmp-like)
        env = {"PERL5LIB": str(lib), "PERL5OPT": "-MTcwSpy", "LD_PRELOAD": "/nonexistent-tcw-h15.so"}
        result, out = await run(box, ["perl", "-e", "print qq(ran\\n)"], **env)
        assert result.exit_code == 0, out
        assert "ran" in out
        uid = pwd.getpwnam(box.task_dir.name).pw_uid
        # loaded exactly once: by the task's own perl, as the task user — not by the root stub
        assert marker.read_text().split() == [str(uid)]
        # ld.so complains once about the missing LD_PRELOAD object: for the command, not the stub
        assert out.count("nonexistent-tcw-h15.so") == 1, out
    finally:
        for f in lib.iterdir():
            f.unlink()
        lib.rmdir()


async def test_the_command_inherits_no_descriptor_of_the_stub(box: Any) -> None:
    result, out = await run(box, ["sh", "-c", "ls /proc/$$/fd"])
    assert result.exit_code == 0, out
    assert sorted(out.split()) == ["0", "1", "2"], out


async def test_the_environment_is_exactly_the_tasks_and_never_in_argv(box: Any) -> None:
    """What the command gets is exactly the env it was given (order, odd values); what the
    stub's argv holds is the command, paths and ids, never an environment value."""
    secret = "tcw-env-secret-" + unique_sleep()
    env = {"PATH": "/usr/bin:/bin", "SECRETISH": secret, "ODD": "a=b\nc d", "EMPTY": ""}
    log = RecordingLog()
    result = await box.execute(["env", "-0"], env, log)
    assert result.exit_code == 0
    entries = [e for e in log.text.split("\0") if e]
    assert entries == [f"{k}={v}" for k, v in env.items()]
    uid, gid = pwd.getpwnam(box.task_dir.name).pw_uid, pwd.getpwnam(box.task_dir.name).pw_gid
    launch = spawnstub.StubLaunch.start(
        ["true"], env, str(box.task_dir), spawnstub.TaskUser(uid, gid), [], stdout=subprocess.DEVNULL
    )
    try:
        assert launch.popen.wait(10) == 0
        assert launch.start_error() is None
        assert not any(secret in arg for arg in launch.popen.args)  # type: ignore[union-attr]
    finally:
        launch.close()


async def test_start_errors_are_judged_with_the_task_users_rights(box: Any) -> None:
    """Root could run this script; the task user cannot: that is a start error, as subprocess
    reports it, not an exit status of the stub."""
    root_only = Path("/tmp") / f"tcw-root-only-{os.getpid()}.sh"
    root_only.write_text("#!/bin/sh\necho should-not-run\n")
    os.chmod(root_only, 0o700)
    try:
        result, out = await run(box, [str(root_only)])
        assert result.exit_code == EXIT_NOT_STARTED, out
        assert result.start_error and "permission denied" in result.start_error, result
        assert "should-not-run" not in out
    finally:
        root_only.unlink()


async def test_a_program_without_interpreter_line_is_a_start_error(box: Any) -> None:
    """execve's ENOEXEC, as subprocess reports it: no silent /bin/sh fallback (execvp's)."""
    script = box.task_dir / "no-shebang"
    script.write_text("echo ran-by-sh\n")
    os.chmod(script, 0o755)
    os.chown(script, pwd.getpwnam(box.task_dir.name).pw_uid, -1)
    result, out = await run(box, ["./no-shebang"])
    assert result.exit_code == EXIT_NOT_STARTED, out
    assert result.start_error and "exec format error" in result.start_error.lower(), result
    assert "ran-by-sh" not in out


async def test_path_search_skips_a_directory_the_task_user_cannot_use(box: Any) -> None:
    """The first PATH entry holds a root-only program of the same name: subprocess goes on to
    the next entry, and so does the stub."""
    hidden = Path("/tmp") / f"tcw-hidden-bin-{os.getpid()}"
    hidden.mkdir(mode=0o700)
    try:
        (hidden / "id").write_text("#!/bin/sh\necho wrong-id\n")
        os.chmod(hidden / "id", 0o755)
        result, out = await run(box, ["id", "-un"], PATH=f"{hidden}:/usr/bin:/bin")
        assert result.exit_code == 0, (result, out)
        assert out.strip() == box.task_dir.name
    finally:
        (hidden / "id").unlink()
        hidden.rmdir()


def test_the_stub_never_starts_anything_as_root() -> None:
    with pytest.raises(ValueError):
        spawnstub.StubLaunch.start(["true"], {}, "/", spawnstub.TaskUser(0, 0), [])


def test_an_environment_execve_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError):
        spawnstub.encode_environment({"A=B": "x"})
    with pytest.raises(ValueError):
        spawnstub.encode_environment({"A": "x\0y"})


async def test_processes_of_the_task_user_outside_the_cgroup_die_before_the_next_command(
    box: Any,
) -> None:
    """The per-command sweep finishes in the background, but nothing of the task user starts
    before it is over, and ``destroy`` waits for it too."""
    entry = pwd.getpwnam(box.task_dir.name)
    token = unique_sleep()
    # a process of the task user that no command started (outside the task's cgroup and tree)
    stray = subprocess.Popen(
        ["setsid", "sleep", token], user=entry.pw_uid, group=entry.pw_gid, extra_groups=[]
    )
    try:
        time.sleep(0.1)
        result, _ = await run(box, ["true"])
        assert result.exit_code == 0
        assert stray.poll() is None or stray.returncode == -9
        result, _ = await run(box, ["true"])  # starts only once the sweep is over
        assert result.exit_code == 0
        assert stray.poll() == -9, "the task user's stray process outlived the sweep"
    finally:
        stray.kill()
        stray.wait()


async def test_the_pool_tops_up_after_the_run_not_at_its_start(mu_engine: MultiuserEngine) -> None:
    pool = mu_engine._pool
    assert pool is not None
    deadline = time.monotonic() + 60
    while pool.ready_count < 2:  # taskUserPoolSize 2
        assert time.monotonic() < deadline, "the pool never filled"
        await asyncio.sleep(0.05)
    first = await mu_engine.prepare(run_context())
    await asyncio.sleep(0.5)
    assert pool.ready_count == 1, "a useradd started while the run that took a user began"
    second = await mu_engine.prepare(run_context())  # the last ready user: refill at once
    try:
        while pool.ready_count < 2:
            assert time.monotonic() < deadline, "taking the last user did not refill the pool"
            await asyncio.sleep(0.05)
    finally:
        await first.destroy()
        await second.destroy()


async def test_helpers_run_as_the_task_user_through_the_stub(box: Any, worker_files: dict[str, Path]) -> None:
    """The chain-of-trust read check and the mount-point ``mkdir`` run as the task user (the
    stub, not a fork of the worker): root-only things stay closed, the task's own are open."""
    own = box.task_dir / "mine.txt"
    own.write_text("x")
    os.chown(own, pwd.getpwnam(box.task_dir.name).pw_uid, -1)
    assert await box.task_user_can_read(str(own))
    assert not await box.task_user_can_read(str(worker_files["key"]))
    await box.make_dirs(box.task_dir / "a" / "b")
    made = box.task_dir / "a" / "b"
    assert made.is_dir() and made.stat().st_uid == pwd.getpwnam(box.task_dir.name).pw_uid
    root_only = Path("/tmp") / f"tcw-root-only-dir-{os.getpid()}"
    root_only.mkdir(mode=0o755)
    try:
        with pytest.raises(PermissionError):
            await box.make_dirs(root_only / "mount")
        assert not (root_only / "mount").exists()
    finally:
        root_only.rmdir()


async def test_without_the_stub_commands_still_start_as_the_task_user(
    box: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forking fallback (no perl, or a machine whose system call numbers are unknown) keeps
    every guarantee: the task user, no groups, the cgroup, start errors."""
    monkeypatch.setattr(spawnstub, "launch_available", lambda: False)
    entry = pwd.getpwnam(box.task_dir.name)
    result, out = await run(
        box, ["sh", "-c", "id -u; grep ^Groups: /proc/self/status; cat /proc/self/cgroup"]
    )
    assert result.exit_code == 0, out
    lines = out.splitlines()
    assert lines[0] == str(entry.pw_uid) and lines[1].split() == ["Groups:"]
    if box.cgroup is not None:
        assert box.cgroup.dirs[0].name in out
    result, _ = await run(box, ["no-such-command-tcw-h15"])
    assert result.exit_code == EXIT_NOT_STARTED and result.start_error


async def test_a_user_is_handed_out_only_after_its_creation_hooks_sweep(
    scratch_root: Path, worker_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runAfterUserCreation`` runs as the new user; the sweep after it must be over before a
    task gets the user, or it would kill the task's first command."""
    from helpers.engines import make_config

    from tcworker.engines.multiuser import MultiuserSandbox

    swept: list[float] = []
    original = MultiuserSandbox._sweep

    async def slow_sweep(self: Any) -> None:
        await asyncio.sleep(0.5)
        await original(self)
        swept.append(time.monotonic())

    monkeypatch.setattr(MultiuserSandbox, "_sweep", slow_sweep)
    hook = scratch_root / "after-user-creation.sh"
    hook.write_text("#!/bin/sh\ntrue\n")
    os.chmod(hook, 0o755)
    engine = MultiuserEngine(kill_grace=1.0)
    await engine.initialise(
        make_config(scratch_root, "multiuser", runAfterUserCreation=str(hook), taskUserPoolSize=1)
    )
    try:
        box = await engine.prepare(run_context())
        taken = time.monotonic()
        try:
            assert swept and swept[0] <= taken, "a user was handed out while its hook's sweep still ran"
        finally:
            await box.destroy()
    finally:
        await engine.shutdown()
