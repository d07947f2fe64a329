"""The engine contract (design G11): every host engine, driven directly through its Sandbox, with
real processes, real files and (multiuser) real OS users."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import KILL_GRACE, command_env, processes_with, unique_sleep
from helpers.logs import RecordingLog

from tcworker.engines.base import (
    EXIT_ABORTED,
    EXIT_NOT_STARTED,
    ArtifactInvalid,
    ArtifactMissing,
    CancelReason,
    Sandbox,
)


async def run(sandbox: Any, argv: list[str], **env: str) -> tuple[Any, RecordingLog]:
    log = RecordingLog()
    result = await sandbox.execute(argv, command_env(sandbox, **env), log)
    return result, log


async def wait_for_output(log: RecordingLog, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.text:
        assert time.monotonic() < deadline, f"{text!r} never appeared in output: {log.text!r}"
        await asyncio.sleep(0.02)


def escaping_tree_script(token: str) -> str:
    """A shell script leaving a child, a setsid'd grandchild, a double-forked daemon and a
    process that moved to its own process group, then waiting forever."""
    return (
        f"sleep {token} & "
        f"(setsid sleep {token} &) ; "
        f"sh -c 'sleep {token} & exec sleep {token}' & "
        f"python3 -c 'import os,time; os.setpgid(0,0); os.fork() or time.sleep(1000); time.sleep(1000)' {token} & "
        f"echo ready; sleep {token}"
    )


async def test_sandbox_satisfies_the_protocol(sandbox: Any) -> None:
    assert isinstance(sandbox, Sandbox)
    assert sandbox.task_dir.is_dir()
    assert sandbox.workdir_in_task == str(sandbox.task_dir)
    assert len(sandbox.task_dir.name) <= 20 and sandbox.task_dir.name.startswith("task_")


@pytest.mark.engines(
    "simple",
    "multiuser",
    why="a host engine's private corner of the task dir; a container (root inside) would see it anyway",
)
async def test_host_sandbox_has_a_private_worker_dir(sandbox: Any) -> None:
    private = sandbox.task_dir / "generic-worker"
    assert private.is_dir()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert private.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("code", [0, 1, 7, 255])
async def test_exit_code_is_reported(sandbox: Any, code: int) -> None:
    result, _ = await run(sandbox, ["sh", "-c", f"exit {code}"])
    assert result.exit_code == code
    assert result.succeeded is (code == 0)
    assert result.cancel_reason is None and result.start_error is None


@pytest.mark.engines(
    "simple",
    "multiuser",
    why="docker reports a container's exit status only (137 after SIGKILL), never a signal; and the "
    "command is PID 1 of its container, which ignores a SIGKILL sent from inside",
)
async def test_signal_death_is_reported(sandbox: Any) -> None:
    result, _ = await run(sandbox, ["sh", "-c", "kill -KILL $$"])
    assert result.signal == 9
    assert result.exit_code == -1
    assert not result.succeeded


@pytest.mark.engines(
    "simple", "multiuser", why="dockerd adds HOSTNAME, HOME, PATH and TERM to every container's environment"
)
async def test_env_is_exactly_what_was_passed(sandbox: Any) -> None:
    env = command_env(sandbox, FOO="bar baz", EMPTY="")
    log = RecordingLog()
    result = await sandbox.execute(["/usr/bin/env", "-0"], env, log)
    assert result.exit_code == 0
    seen = dict(entry.split("=", 1) for entry in log.text.split("\0") if entry)
    assert seen == env


async def test_base_env_hides_the_worker_secrets(
    engine: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCLUSTER_ACCESS_TOKEN", "worker-secret-token")
    monkeypatch.setenv("TCW_WORKER_ONLY", "worker-private")
    base = sandbox.base_env()
    assert "TASKCLUSTER_ACCESS_TOKEN" not in base
    assert {"HOME", "PATH", "USER"} <= set(base) or engine.name in ("simple", "docker")
    if engine.name == "docker":  # the image's own Env is the container's default environment
        assert base == {}
    elif engine.name == "multiuser":
        assert base == {
            "HOME": str(sandbox.task_dir),
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "USER": sandbox.task_dir.name,
        }
    else:
        assert base["TCW_WORKER_ONLY"] == "worker-private"  # insecure engine: worker env minus the token


async def test_stdout_and_stderr_are_combined_in_order(sandbox: Any) -> None:
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    result, log = await run(sandbox, ["sh", "-c", script])
    assert result.exit_code == 0
    assert log.text == "".join(f"out{i}\nerr{i}\n" for i in range(1, 6))


async def test_command_runs_in_the_task_directory(sandbox: Any) -> None:
    result, log = await run(sandbox, ["pwd"])
    assert result.exit_code == 0
    assert log.text.strip() == str(sandbox.task_dir)


async def test_command_not_found_is_a_start_error(sandbox: Any) -> None:
    result, _ = await run(sandbox, ["no-such-command-tcw-h4"])
    assert result.exit_code == EXIT_NOT_STARTED
    assert result.start_error and "no-such-command-tcw-h4" in result.start_error
    assert not result.succeeded


async def test_non_executable_file_is_a_start_error(sandbox: Any) -> None:
    script = sandbox.task_dir / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    os.chmod(script, 0o644)
    result, _ = await run(sandbox, [str(script)])
    assert result.exit_code == EXIT_NOT_STARTED
    assert result.start_error


async def test_abort_kills_grandchildren_and_escapees(sandbox: Any) -> None:
    token = unique_sleep()
    log = RecordingLog()
    running = asyncio.create_task(
        sandbox.execute(["sh", "-c", escaping_tree_script(token)], command_env(sandbox), log)
    )
    await wait_for_output(log, "ready")
    await asyncio.sleep(0.3)  # let the double fork finish and the daemon be re-parented
    assert len(processes_with(token)) >= 5
    started = time.monotonic()
    sandbox.abort(CancelReason.CANCELLED)
    result = await asyncio.wait_for(running, 15)
    assert result.cancel_reason is CancelReason.CANCELLED
    assert result.exit_code == EXIT_ABORTED
    assert not result.succeeded
    assert time.monotonic() - started < 10
    assert processes_with(token) == []


async def test_abort_is_idempotent_and_first_reason_wins(sandbox: Any) -> None:
    token = unique_sleep()
    log = RecordingLog()
    running = asyncio.create_task(
        sandbox.execute(["sh", "-c", f"echo ready; sleep {token}"], command_env(sandbox), log)
    )
    await wait_for_output(log, "ready")
    sandbox.abort(CancelReason.WORKER_STOPPING)
    sandbox.abort(CancelReason.CANCELLED)
    sandbox.abort(CancelReason.MAX_RUN_TIME)
    result = await asyncio.wait_for(running, 15)
    assert result.cancel_reason is CancelReason.WORKER_STOPPING
    assert processes_with(token) == []
    # A command started after the abort does not run at all.
    later, log2 = await run(sandbox, ["sh", "-c", "echo should-not-run"])
    assert later.exit_code == EXIT_ABORTED and later.cancel_reason is CancelReason.WORKER_STOPPING
    assert "should-not-run" not in log2.text


async def test_interrupt_then_grace_then_kill(sandbox: Any) -> None:
    """SIGTERM first (a well-behaved task can clean up), SIGKILL after the grace period."""
    token = unique_sleep()
    log = RecordingLog()
    script = f"trap 'echo got-term' TERM; echo ready; while true; do sleep {token} & wait $!; done"
    running = asyncio.create_task(sandbox.execute(["sh", "-c", script], command_env(sandbox), log))
    await wait_for_output(log, "ready")
    started = time.monotonic()
    sandbox.abort(CancelReason.CANCELLED)
    result = await asyncio.wait_for(running, 15)
    elapsed = time.monotonic() - started
    assert "got-term" in log.text
    assert KILL_GRACE - 0.1 <= elapsed < KILL_GRACE + 7, elapsed
    assert result.cancel_reason is CancelReason.CANCELLED
    assert processes_with(token) == []


async def test_max_run_time_kills_at_once(sandbox: Any) -> None:
    token = unique_sleep()
    log = RecordingLog()
    script = f"trap '' TERM; echo ready; sleep {token}"
    running = asyncio.create_task(sandbox.execute(["sh", "-c", script], command_env(sandbox), log))
    await wait_for_output(log, "ready")
    started = time.monotonic()
    sandbox.abort(CancelReason.MAX_RUN_TIME)
    result = await asyncio.wait_for(running, 15)
    assert time.monotonic() - started < KILL_GRACE - 0.2  # no SIGTERM grace
    assert result.cancel_reason is CancelReason.MAX_RUN_TIME
    assert result.exit_code == EXIT_ABORTED
    assert processes_with(token) == []


async def test_cancelling_execute_kills_the_tree(sandbox: Any) -> None:
    token = unique_sleep()
    log = RecordingLog()
    running = asyncio.create_task(
        sandbox.execute(["sh", "-c", escaping_tree_script(token)], command_env(sandbox), log)
    )
    await wait_for_output(log, "ready")
    await asyncio.sleep(0.3)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert processes_with(token) == []


async def test_nothing_outlives_a_command_that_exits(sandbox: Any) -> None:
    token = unique_sleep()
    script = f"(setsid sleep {token} &); nohup sleep {token} >/dev/null 2>&1 & echo done"
    result, log = await run(sandbox, ["sh", "-c", script])
    assert result.exit_code == 0
    assert "done" in log.text
    assert processes_with(token) == []


async def test_output_is_streamed_in_chunks(sandbox: Any) -> None:
    size = 200 * 1024 * 1024
    argv = ["head", "-c", str(size), "/dev/zero"]
    log = RecordingLog(keep=False)
    result = await sandbox.execute(argv, command_env(sandbox), log)
    assert result.exit_code == 0
    assert log.size == size
    assert log.biggest_chunk <= 1024 * 1024  # handed over piecewise, never the whole output


async def test_times_are_reported(sandbox: Any) -> None:
    result, _ = await run(
        sandbox, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.2"]
    )
    assert result.exit_code == 0
    assert result.wall_time >= 0.2
    assert result.user_time + result.system_time > 0


# ---- artifacts ---------------------------------------------------------------------------------


async def make_files(sandbox: Any, script: str) -> None:
    result, log = await run(sandbox, ["sh", "-c", script])
    assert result.exit_code == 0, log.text


async def test_file_artifact_is_handed_out(sandbox: Any, tmp_path: Path) -> None:
    await make_files(sandbox, "mkdir -p out && printf 'hello artifact' > out/a.txt")
    files = await sandbox.collect_artifact("out/a.txt", "file", tmp_path)
    assert len(files) == 1
    assert files[0].relative_name == ""
    assert files[0].size == len("hello artifact")
    assert files[0].path.read_bytes() == b"hello artifact"


async def test_directory_artifact_lists_files_recursively(sandbox: Any, tmp_path: Path) -> None:
    await make_files(
        sandbox,
        "mkdir -p out/b/c out/empty && printf 1 > out/x.txt && printf 22 > out/b/y.bin && "
        "printf 333 > out/b/c/z && ln -s x.txt out/link-to-x && ln -s b out/dirlink && "
        "ln -s missing out/dangling && mkfifo out/fifo",
    )
    files = await sandbox.collect_artifact("out", "directory", tmp_path)
    got = {f.relative_name: f.path.read_bytes() for f in files}
    assert got == {"x.txt": b"1", "b/y.bin": b"22", "b/c/z": b"333", "link-to-x": b"1"}
    assert [f.relative_name for f in files] == sorted(got)
    assert all(f.size == len(got[f.relative_name]) for f in files)


async def test_absolute_path_inside_the_task_dir_is_accepted(sandbox: Any, tmp_path: Path) -> None:
    await make_files(sandbox, "printf abs > abs.txt")
    files = await sandbox.collect_artifact(str(sandbox.task_dir / "abs.txt"), "file", tmp_path)
    assert files[0].path.read_bytes() == b"abs"


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "sub/../../x"])
async def test_paths_outside_the_task_dir_are_refused(sandbox: Any, tmp_path: Path, path: str) -> None:
    with pytest.raises(ArtifactInvalid) as caught:
        await sandbox.collect_artifact(path, "file", tmp_path)
    assert caught.value.reason == "invalid-resource-on-worker"
    assert "outside the task directory" in caught.value.message


async def test_symlink_leaving_the_task_dir_is_refused(sandbox: Any, tmp_path: Path) -> None:
    await make_files(
        sandbox, "ln -s /etc/passwd passwd.txt && mkdir d && printf ok > d/ok && ln -s /etc d/etc"
    )
    with pytest.raises(ArtifactInvalid):
        await sandbox.collect_artifact("passwd.txt", "file", tmp_path)
    # A directory symlink inside a directory artifact is not followed (so /etc is not walked) …
    files = await sandbox.collect_artifact("d", "directory", tmp_path)
    assert [f.relative_name for f in files] == ["ok"]
    # … but a file symlink leaving the task dir refuses the whole directory artifact.
    await make_files(sandbox, "ln -s /etc/hostname d/hostname")
    with pytest.raises(ArtifactInvalid) as caught:
        await sandbox.collect_artifact("d", "directory", tmp_path)
    assert "hostname" in caught.value.message


async def test_missing_artifacts_have_generic_worker_messages(sandbox: Any, tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissing) as caught:
        await sandbox.collect_artifact("nope/no_such_file", "file", tmp_path)
    assert caught.value.reason == "file-missing-on-worker"
    assert caught.value.message == f"Could not read file '{sandbox.task_dir}/nope/no_such_file'"
    with pytest.raises(ArtifactMissing) as caught:
        await sandbox.collect_artifact("nope", "directory", tmp_path)
    assert caught.value.message == f"Could not read directory '{sandbox.task_dir}/nope'"


async def test_wrong_artifact_type_has_generic_worker_messages(sandbox: Any, tmp_path: Path) -> None:
    await make_files(sandbox, "mkdir -p b/c && printf j > b/c/d.jpg")
    with pytest.raises(ArtifactInvalid) as caught:
        await sandbox.collect_artifact("b/c", "file", tmp_path)
    assert caught.value.message == (
        f"File artifact '{sandbox.task_dir}/b/c' exists as a directory, not a file, on the worker"
    )
    with pytest.raises(ArtifactInvalid) as caught:
        await sandbox.collect_artifact("b/c/d.jpg", "directory", tmp_path)
    assert caught.value.message == (
        f"Directory artifact '{sandbox.task_dir}/b/c/d.jpg' exists as a file, not a directory, on the worker"
    )


async def test_empty_directory_artifact_yields_nothing(sandbox: Any, tmp_path: Path) -> None:
    await make_files(sandbox, "mkdir empty")
    assert await sandbox.collect_artifact("empty", "directory", tmp_path) == []


# ---- destroy -----------------------------------------------------------------------------------


async def test_destroy_removes_the_task_dir_and_is_idempotent(engine: Any) -> None:
    from helpers.engines import run_context

    box = await engine.prepare(run_context())
    task_dir = box.task_dir
    await make_files(box, "mkdir -p deep/er && printf x > deep/er/f")
    await box.destroy()
    assert not task_dir.exists()
    await box.destroy()
    assert not task_dir.exists()


async def test_destroy_keeps_the_task_dir_when_clean_up_is_off(engine: Any) -> None:
    from helpers.engines import run_context

    engine._config = engine.test_config.replace(cleanUpTaskDirs=False)
    box = await engine.prepare(run_context())
    await make_files(box, "printf kept > kept.txt")
    await box.destroy()
    assert (box.task_dir / "kept.txt").read_text() == "kept"
    if engine.name == "multiuser":  # handed to root so a recycled uid cannot read it
        assert (box.task_dir / "kept.txt").stat().st_uid == 0
    await box.destroy()


async def test_two_runs_get_separate_task_dirs(engine: Any) -> None:
    from helpers.engines import run_context

    boxes = await asyncio.gather(*(engine.prepare(run_context()) for _ in range(3)))
    try:
        assert len({b.task_dir for b in boxes}) == 3
        results = await asyncio.gather(*(run(b, ["sh", "-c", "sleep 0.2; pwd"]) for b in boxes))
        for box, (result, log) in zip(boxes, results, strict=True):
            assert result.exit_code == 0
            assert log.text.strip() == str(box.task_dir)
    finally:
        for b in boxes:
            await b.destroy()
