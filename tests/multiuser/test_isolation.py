"""Issue 4, acceptance 1: a task on the multiuser engine tries every forbidden thing, and each
attempt fails; the worker stays healthy and the task user is gone afterwards (real OS users,
real processes; run as root)."""

# The checks below are deliberately blocking (stat a file, start a stand-in process): they observe
# the host between awaits and nothing else runs on the loop meanwhile.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC240, ASYNC251

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import command_env, processes_of_uid, run_context, unique_sleep, write_signing_key
from helpers.logs import RecordingLog

from tcworker.engines.base import ArtifactInvalid, ArtifactNotReadable, CancelReason
from tcworker.engines.multiuser import MultiuserEngine
from tcworker.engines.proctree import kill_user_processes
from tcworker.engines.taskusers import ipc_objects_of
from tcworker.errors import ConfigError, MalformedPayload
from tcworker.exitcodes import ExitCode


async def attempt(box: Any, script: str, **env: str) -> tuple[int, str]:
    log = RecordingLog()
    result = await box.execute(["sh", "-c", script], command_env(box, **env), log)
    return result.exit_code, log.text


async def test_task_runs_as_its_own_unprivileged_user(box: Any) -> None:
    code, out = await attempt(box, "id -u; id -g; id -un; grep ^Groups: /proc/self/status; echo $HOME")
    assert code == 0
    uid, gid, name, groups, home = out.splitlines()
    entry = pwd.getpwnam(box.task_dir.name)
    assert (int(uid), int(gid), name) == (entry.pw_uid, entry.pw_gid, box.task_dir.name)
    assert int(uid) >= 1000
    assert groups.split() == ["Groups:"]  # no supplementary groups: none of root's leak in
    assert home == str(box.task_dir) == entry.pw_dir
    st = box.task_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (entry.pw_uid, 0o700)


async def test_task_cannot_read_the_worker_config_or_signing_key(
    box: Any, worker_files: dict[str, Path]
) -> None:
    for secret in (worker_files["config"], worker_files["key"]):
        code, out = await attempt(box, f"cat {secret}")
        assert code != 0
        assert "Permission denied" in out
        assert secret.read_bytes() not in out.encode()


async def test_task_cannot_read_the_worker_environ_and_inherits_nothing(
    box: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCLUSTER_ACCESS_TOKEN", "worker-secret-token-h4")
    code, out = await attempt(box, f"cat /proc/{os.getpid()}/environ")
    assert code != 0
    assert "worker-secret-token-h4" not in out
    code, out = await attempt(box, "env")
    assert code == 0
    assert "worker-secret-token-h4" not in out and "TASKCLUSTER_ACCESS_TOKEN" not in out
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert names <= {"HOME", "PATH", "USER", "TASK_ID", "RUN_ID", "TASK_WORKDIR", "PWD"}


async def test_task_cannot_signal_the_worker(box: Any) -> None:
    stand_in = subprocess.Popen(["sleep", "60"])  # a root process like the worker
    try:
        code, out = await attempt(box, f"kill -0 {os.getpid()}")  # the permission check of kill(2)
        assert code != 0 and "not permitted" in out
        code, out = await attempt(box, f"kill -KILL {stand_in.pid}; kill -TERM {stand_in.pid}")
        assert code != 0
        assert stand_in.poll() is None
    finally:
        stand_in.kill()
        stand_in.wait()


async def test_task_cannot_write_to_etc(box: Any) -> None:
    probe = Path(f"/etc/tcw-h4-probe-{box.task_dir.name}")
    try:
        code, out = await attempt(box, f"touch {probe} || mkdir {probe}")
        assert code != 0 and "Permission denied" in out
        assert not probe.exists()
    finally:  # never leave litter in /etc, even if isolation were broken
        if probe.is_dir():
            probe.rmdir()
        elif probe.exists():
            probe.unlink()


async def test_concurrent_tasks_cannot_read_each_others_home(mu_engine: MultiuserEngine) -> None:
    first, second = await asyncio.gather(mu_engine.prepare(run_context()), mu_engine.prepare(run_context()))
    try:
        assert pwd.getpwnam(first.task_dir.name).pw_uid != pwd.getpwnam(second.task_dir.name).pw_uid
        token = unique_sleep()
        log = RecordingLog()
        holder = asyncio.create_task(
            first.execute(
                ["sh", "-c", f"echo top-secret > secret.txt; echo ready; sleep {token}"],
                command_env(first),
                log,
            )
        )
        while "ready" not in log.text:
            await asyncio.sleep(0.02)
        code, out = await attempt(second, f"cat {first.task_dir}/secret.txt; ls {first.task_dir}")
        assert code != 0
        assert "top-secret" not in out and "Permission denied" in out
        code, _ = await attempt(second, f"echo x > {first.task_dir}/planted")
        assert code != 0
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
    finally:
        await asyncio.gather(first.destroy(), second.destroy())


async def test_nothing_of_the_task_user_survives_destroy(mu_engine: MultiuserEngine) -> None:
    box = await mu_engine.prepare(run_context())
    name, task_dir = box.task_dir.name, box.task_dir
    uid = pwd.getpwnam(name).pw_uid
    token = unique_sleep()
    script = (
        f"mkdir -p /tmp/tcw-h4-{name}/deep && echo x > /tmp/tcw-h4-{name}/deep/f && echo y > /tmp/{name}.txt && "
        f"echo z > /var/tmp/{name}.txt && echo w > /dev/shm/{name} && ipcmk -M 4096 >/dev/null && "
        # a daemon proper: double fork + setsid, output detached; plus nohup and a new process group
        f"python3 -c 'import os,sys,time\nif os.fork(): sys.exit(0)\nos.setsid()\nif os.fork(): sys.exit(0)\n"
        f"os.closerange(0, 3)\ntime.sleep(1000)' {token} && "
        f"(setsid nohup sleep {token} >/dev/null 2>&1 &) && echo started"
    )
    code, out = await attempt(box, script)
    assert code == 0, out
    # execute already killed every process of the uid when the command returned
    assert processes_of_uid(uid) == []
    assert ipc_objects_of(uid), "the task should have created a shared memory segment"
    # a process started by a second command and still running at destroy time goes too
    log = RecordingLog()
    running = asyncio.create_task(box.execute(["sh", "-c", f"echo go; sleep {token}"], command_env(box), log))
    while "go" not in log.text:
        await asyncio.sleep(0.02)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await box.destroy()
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    assert processes_of_uid(uid) == []
    assert not task_dir.exists()
    for leftover in (Path(f"/tmp/tcw-h4-{name}"), Path(f"/tmp/{name}.txt"), Path(f"/var/tmp/{name}.txt")):
        assert not leftover.exists(), leftover
    assert not Path(f"/dev/shm/{name}").exists()
    assert ipc_objects_of(uid) == []


async def test_symlinks_to_secrets_are_never_published(
    box: Any, worker_files: dict[str, Path], tmp_path: Path
) -> None:
    private = box.task_dir / "generic-worker" / "worker-only.txt"  # inside the task dir, root 0600
    private.write_text("worker private")
    os.chmod(private, 0o600)
    script = (
        f"ln -s /etc/shadow shadow.txt && ln -s {worker_files['key']} key.txt && "
        f"ln -s {worker_files['config']} config.json && ln -s generic-worker/worker-only.txt inner.txt && "
        f"mkdir pub && echo fine > pub/ok.txt && ln -s /etc/shadow pub/shadow"
    )
    code, out = await attempt(box, script)
    assert code == 0, out
    for name in ("shadow.txt", "key.txt", "config.json"):
        with pytest.raises(ArtifactInvalid):
            await box.collect_artifact(name, "file", tmp_path)
    with pytest.raises(ArtifactNotReadable) as caught:  # inside the task dir, but not the task user's
        await box.collect_artifact("inner.txt", "file", tmp_path)
    assert caught.value.reason == "file-not-readable-on-worker"
    assert "as task user" in caught.value.message
    with pytest.raises(ArtifactInvalid):
        await box.collect_artifact("pub", "directory", tmp_path)
    staged = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(b"worker private" not in p.read_bytes() for p in staged)
    assert all(worker_files["key"].read_bytes() not in p.read_bytes() for p in staged)


async def test_hard_link_to_a_secret_is_not_readable(box: Any, tmp_path: Path) -> None:
    code, _ = await attempt(box, "ln /etc/shadow hard-shadow")
    if code != 0:  # fs.protected_hardlinks forbids it already
        assert not (box.task_dir / "hard-shadow").exists()
        return
    with pytest.raises(ArtifactNotReadable):
        await box.collect_artifact("hard-shadow", "file", tmp_path)


async def test_artifacts_are_read_with_the_task_users_rights(box: Any, tmp_path: Path) -> None:
    code, out = await attempt(
        box, "mkdir d && echo data > d/readable && echo hidden > mine && chmod 000 mine"
    )
    assert code == 0, out
    with pytest.raises(ArtifactNotReadable) as caught:  # root could read it; the task user cannot
        await box.collect_artifact("mine", "file", tmp_path)
    assert caught.value.message.startswith(
        f"Could not copy file '{box.task_dir}/mine' to temporary location as task user:"
    )
    files = await box.collect_artifact("d", "directory", tmp_path)
    assert [(f.relative_name, f.path.read_bytes()) for f in files] == [("readable", b"data\n")]
    assert files[0].path.is_relative_to(tmp_path)  # a private copy, not the task's file
    assert files[0].path.stat().st_uid == 0


async def test_os_groups_become_supplementary_groups(box: Any) -> None:
    users = grp.getgrnam("users")
    await box.set_os_groups(["users"])
    code, out = await attempt(box, "id -G")
    assert code == 0
    assert str(users.gr_gid) in out.split()
    with pytest.raises(MalformedPayload) as caught:
        await box.set_os_groups(["no-such-group-tcw-h4"])
    assert "no-such-group-tcw-h4" in str(caught.value)


async def test_run_task_as_current_user(box: Any) -> None:
    credentials = await box.run_as_current_user()
    assert credentials == box.task_dir / "task-user-credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    code, out = await attempt(box, "id -u; cat task-user-credentials.json")
    assert code == 0
    assert out.splitlines()[0] == "0"
    assert f'"name": "{box.task_dir.name}"' in out
    assert await box.task_user_can_read(str(credentials))


async def test_signing_key_readable_by_others_refuses_to_start(scratch_root: Path) -> None:
    from helpers.engines import make_config

    config = make_config(scratch_root, "multiuser")
    key = Path(config.ed25519SigningKeyLocation)
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError) as caught:
        await MultiuserEngine().initialise(config)
    assert caught.value.exit_code == ExitCode.MISSING_ED25519_PRIVATE_KEY == 82
    assert "readable by other users" in str(caught.value) and str(key) in str(caught.value)
    os.chmod(key, 0o600)
    key.unlink()
    with pytest.raises(ConfigError) as caught:
        await MultiuserEngine().initialise(config)
    assert caught.value.exit_code == 82
    write_signing_key(key)
    key.write_text("not base64!")
    with pytest.raises(ConfigError) as caught:
        await MultiuserEngine().initialise(config)
    assert caught.value.exit_code == 82


async def test_stale_task_users_are_removed_at_start_up(
    scratch_root: Path, worker_files: dict[str, Path]
) -> None:
    from helpers.engines import make_config

    config = make_config(scratch_root, "multiuser")
    config.tasks_dir.mkdir(exist_ok=True)
    name = f"task_stale{os.getpid() % 100000}_0"
    home = config.tasks_dir / name
    subprocess.run(["useradd", "-m", "-d", str(home), "-U", name], check=True, capture_output=True)
    uid = pwd.getpwnam(name).pw_uid
    token = unique_sleep()
    orphan = subprocess.Popen(["setsid", "sleep", token], user=uid, group=uid, extra_groups=[])
    time.sleep(0.1)
    engine = MultiuserEngine()
    try:
        await engine.initialise(config)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert not home.exists()
        assert orphan.wait(timeout=5) == -9
    finally:
        await engine.shutdown()  # its pool's users go too
        orphan.kill()
        subprocess.run(["userdel", "-f", name], capture_output=True)


async def test_a_task_that_keeps_forking_is_stopped(box: Any) -> None:
    token = unique_sleep()
    log = RecordingLog()
    script = f"echo ready; while :; do (setsid sleep {token} &); sleep 0.01; done"
    running = asyncio.create_task(box.execute(["sh", "-c", script], command_env(box), log))
    while "ready" not in log.text:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    box.abort(CancelReason.CANCELLED)
    result = await asyncio.wait_for(running, 20)
    assert result.cancel_reason is CancelReason.CANCELLED
    assert processes_of_uid(pwd.getpwnam(box.task_dir.name).pw_uid) == []


async def test_the_sweep_refuses_root_and_the_worker_itself() -> None:
    with pytest.raises(ValueError):
        await kill_user_processes(0, 0)
    with pytest.raises(ValueError):
        await kill_user_processes(os.getuid(), os.getgid())


async def test_run_after_user_creation_runs_as_the_new_user(
    scratch_root: Path, worker_files: dict[str, Path]
) -> None:
    from helpers.engines import make_config

    hook = scratch_root / "after-user-creation.sh"
    hook.write_text('#!/bin/sh\nid -un > "$HOME/created-by.txt"\n')
    os.chmod(hook, 0o755)
    engine = MultiuserEngine()
    await engine.initialise(make_config(scratch_root, "multiuser", runAfterUserCreation=str(hook)))
    try:
        sandbox = await engine.prepare(run_context())
        try:
            marker = sandbox.task_dir / "created-by.txt"
            assert marker.read_text().strip() == sandbox.task_dir.name
            assert marker.stat().st_uid == pwd.getpwnam(sandbox.task_dir.name).pw_uid
        finally:
            await sandbox.destroy()
    finally:
        await engine.shutdown()  # its pool's users go too


def _staged_bytes(root: Path) -> int:
    """Bytes actually allocated under ``root`` (a sparse copy would still count what was written)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


async def test_oversize_artifacts_are_sized_as_the_task_user_not_copied(box: Any, tmp_path: Path) -> None:
    """Issue 14: a 10 GiB sparse file over the limit is never copied out (the helper only stats
    the descriptor it opened as the task user); smaller files beside it are copied as usual."""
    code, out = await attempt(
        box, "truncate -s 10G big.bin && mkdir d && truncate -s 10G d/huge && echo small > d/small"
    )
    assert code == 0, out
    limit = 1 << 20
    started = time.monotonic()
    (big,) = await box.collect_artifact("big.bin", "file", tmp_path, max_file_bytes=limit)
    files = {
        f.relative_name: f
        for f in await box.collect_artifact("d", "directory", tmp_path, max_file_bytes=limit)
    }
    elapsed = time.monotonic() - started
    assert big.oversize and big.size == 10 << 30 and not big.path.exists()
    assert files["huge"].oversize and files["huge"].size == 10 << 30 and not files["huge"].path.exists()
    assert not files["small"].oversize and files["small"].path.read_bytes() == b"small\n"
    assert _staged_bytes(tmp_path) < limit, "an oversize file was copied into staging"
    assert elapsed < 30, f"sizing took {elapsed:.1f}s: was the content read?"
    # still read with the task user's rights: an unreadable file is refused, not sized
    code, out = await attempt(box, "truncate -s 10G secret.bin && chmod 000 secret.bin")
    assert code == 0, out
    with pytest.raises(ArtifactNotReadable):
        await box.collect_artifact("secret.bin", "file", tmp_path, max_file_bytes=limit)
