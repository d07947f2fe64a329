"""Engine-level tests: a real ``DockerEngine`` against a real dockerd, driving the Sandbox directly.

Fast feedback for the container mechanics the full-worker tests rely on: output streaming, exit
codes, kill on abort / cancel, artifact copying with hostile content, clean-up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest
from helpers.dockerimage import import_image
from helpers.dockerruns import containers_of, log_text, make_run, volume_names

from tcworker.engines.base import (
    EXIT_ABORTED,
    EXIT_NOT_STARTED,
    ArtifactInvalid,
    ArtifactMissing,
    CancelReason,
    Sandbox,
)
from tcworker.engines.docker.sandbox import DockerSandbox

pytestmark = pytest.mark.docker

RESERVED = {"TASK_ID": "tid", "RUN_ID": "0"}


async def _prepare(make_engine, tmp_path: Path, payload: dict, **kw) -> tuple[DockerSandbox, object]:
    engine = await make_engine()
    run = make_run(tmp_path, payload, **kw)
    sandbox = await engine.prepare(run)
    assert isinstance(sandbox, DockerSandbox)
    return sandbox, run


def _payload(command: list[str], **extra) -> dict:
    return {"image": "tcworker-test/busybox:latest", "command": command, "maxRunTime": 60, **extra}


async def test_container_output_is_streamed_to_the_task_log_and_exit_zero(
    make_engine, tmp_path: Path
) -> None:
    sandbox, run = await _prepare(
        make_engine, tmp_path, _payload(["sh", "-c", "echo hello from $TASK_ID; echo err >&2"])
    )
    assert isinstance(sandbox, Sandbox)
    try:
        result = await sandbox.execute(
            run.payload["command"], {"TASK_ID": run.task_id, "RUN_ID": "0"}, run.log
        )
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0 and result.succeeded
    text = log_text(run)
    assert f"hello from {run.task_id}" in text
    assert "err" in text


async def test_output_arrives_while_the_container_still_runs(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(
        make_engine, tmp_path, _payload(["sh", "-c", "echo EARLY-MARK; sleep 3; echo LATE-MARK"])
    )
    try:
        task = asyncio.create_task(sandbox.execute(run.payload["command"], RESERVED, run.log))
        deadline = time.monotonic() + 2.5
        while "EARLY-MARK" not in log_text(run) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "EARLY-MARK" in log_text(run), "output was not streamed before the container exited"
        assert "LATE-MARK" not in log_text(run)
        result = await task
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    assert "LATE-MARK" in log_text(run)


async def test_non_zero_exit_code_is_reported(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["sh", "-c", "exit 3"]))
    try:
        result = await sandbox.execute(run.payload["command"], RESERVED, run.log)
    finally:
        await sandbox.destroy()
    assert result.exit_code == 3
    assert not result.succeeded and result.cancel_reason is None


async def test_env_reaches_the_container_and_empty_command_uses_image_default(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    import_image(docker_client, "tcworker-test/echo-cmd:latest", changes=['CMD ["echo", "DEFAULT-CMD-RAN"]'])
    payload = _payload(["sh", "-c", 'echo "V=$MY_VAR"'], image="tcworker-test/echo-cmd:latest")
    sandbox, run = await _prepare(make_engine, tmp_path, payload)
    try:
        result = await sandbox.execute(run.payload["command"], {**RESERVED, "MY_VAR": "a b\nc"}, run.log)
        default = await sandbox.execute([], RESERVED, run.log)  # [] → the image's own CMD
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    assert "V=a b" in log_text(run)
    assert default.exit_code == 0
    assert "DEFAULT-CMD-RAN" in log_text(run)


async def test_command_not_found_is_a_start_error(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["/no/such/program"]))
    try:
        result = await sandbox.execute(run.payload["command"], RESERVED, run.log)
    finally:
        await sandbox.destroy()
    assert result.exit_code == EXIT_NOT_STARTED
    assert result.start_error and "/no/such/program" in result.start_error
    assert "could not be started" in log_text(run)


async def test_max_run_time_abort_kills_the_container_and_logs_docker_worker_line(
    make_engine, tmp_path: Path
) -> None:
    sandbox, run = await _prepare(
        make_engine, tmp_path, _payload(["sh", "-c", "echo start; sleep 600"], maxRunTime=7)
    )
    try:
        task = asyncio.create_task(sandbox.execute(run.payload["command"], RESERVED, run.log))
        while "start" not in log_text(run):
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        sandbox.abort(CancelReason.MAX_RUN_TIME)
        sandbox.abort(CancelReason.CANCELLED)  # the first reason wins
        result = await asyncio.wait_for(task, 20)
        elapsed = time.monotonic() - t0
    finally:
        await sandbox.destroy()
    assert result.cancel_reason is CancelReason.MAX_RUN_TIME
    assert result.exit_code == EXIT_ABORTED
    assert elapsed < 10
    assert "Task timeout after 7 seconds. Force killing container." in log_text(run)


async def test_cancelling_execute_kills_the_container(make_engine, tmp_path: Path, docker_client) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["sh", "-c", "echo up; sleep 600"]))
    try:
        task = asyncio.create_task(sandbox.execute(run.payload["command"], RESERVED, run.log))
        while "up" not in log_text(run):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (container,) = containers_of(docker_client, run.task_id)
        container.reload()
        assert container.status == "exited"
    finally:
        await sandbox.destroy()


async def test_execute_after_abort_does_not_start_a_container(
    make_engine, tmp_path: Path, docker_client
) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["true"]))
    try:
        sandbox.abort(CancelReason.WORKER_STOPPING)
        result = await sandbox.execute(["true"], RESERVED, run.log)
        assert result.cancel_reason is CancelReason.WORKER_STOPPING
        assert containers_of(docker_client, run.task_id) == []
    finally:
        await sandbox.destroy()


ARTIFACT_SCRIPT = """
set -e
mkdir -p /out/dir/sub /out/tricky
echo file-content > /out/file.txt
echo a > /out/dir/a.txt
echo b > /out/dir/sub/b.txt
ln -s /etc/passwd /out/dir/link-to-passwd
ln /out/dir/a.txt /out/dir/hardlink.txt
mkfifo /out/dir/fifo
ln -s /out/file.txt /out/link-to-file
ln -s ../../../../../../etc /out/tricky/up
"""


async def test_file_and_directory_artifacts_are_copied_out_safely(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["sh", "-c", ARTIFACT_SCRIPT]))
    staging = tmp_path / "staging"
    try:
        result = await sandbox.execute(run.payload["command"], RESERVED, run.log)
        assert result.exit_code == 0, log_text(run)
        (single,) = await sandbox.collect_artifact("/out/file.txt", "file", staging)
        assert single.relative_name == "" and single.path.read_bytes() == b"file-content\n"
        assert single.size == len(b"file-content\n")
        assert single.path.is_relative_to(staging)

        files = await sandbox.collect_artifact("/out/dir", "directory", staging)
        by_name = {f.relative_name: f.path.read_bytes() for f in files}
        assert by_name == {"a.txt": b"a\n", "sub/b.txt": b"b\n", "hardlink.txt": b"a\n"}
        assert all(f.path.is_relative_to(staging) and not f.path.is_symlink() for f in files)
        assert "link-to-passwd" in log_text(run)  # skipped with a warning, never followed on the host

        # A symlink to a file is followed inside the container (never on the host).
        (linked,) = await sandbox.collect_artifact("/out/link-to-file", "file", staging)
        assert linked.path.read_bytes() == b"file-content\n"
        # A link climbing with ../ cannot leave the container's root: it resolves to the image's /etc.
        (passwd,) = await sandbox.collect_artifact("/out/tricky/up/passwd", "file", staging)
        assert passwd.path.read_bytes().startswith(b"root:x:0:0:root:/root:/bin/sh")

        with pytest.raises(ArtifactMissing):
            await sandbox.collect_artifact("/out/nothing-here", "file", staging)
        with pytest.raises(ArtifactInvalid):
            await sandbox.collect_artifact("/out/dir", "file", staging)
        with pytest.raises(ArtifactInvalid):
            await sandbox.collect_artifact("/out/file.txt", "directory", staging)
        with pytest.raises(ArtifactInvalid):
            await sandbox.collect_artifact("/out/dir/fifo", "file", staging)
    finally:
        await sandbox.destroy()


async def test_artifacts_can_be_read_even_when_no_command_ran(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["true"]))
    try:
        (passwd,) = await sandbox.collect_artifact("/etc/passwd", "file", tmp_path / "staging")
        assert passwd.path.read_bytes().startswith(b"root:")
    finally:
        await sandbox.destroy()


async def test_generic_payload_runs_in_the_pool_image_with_the_task_dir_mounted(
    make_engine, tmp_path: Path
) -> None:
    payload = {
        "command": [["sh", "-c", "pwd; echo made > out.txt"], ["sh", "-c", "cat out.txt"]],
        "maxRunTime": 60,
    }
    sandbox, run = await _prepare(make_engine, tmp_path, payload)
    staging = tmp_path / "staging"
    try:
        assert sandbox.workdir_in_task == str(sandbox.task_dir)
        for argv in payload["command"]:
            result = await sandbox.execute(argv, RESERVED, run.log)
            assert result.exit_code == 0, log_text(run)
        assert (sandbox.task_dir / "out.txt").read_text() == "made\n"
        (art,) = await sandbox.collect_artifact("out.txt", "file", staging)
        assert art.path.read_text() == "made\n"
        with pytest.raises(ArtifactInvalid):
            await sandbox.collect_artifact("../../etc/passwd", "file", staging)
    finally:
        await sandbox.destroy()
    text = log_text(run)
    assert str(sandbox.task_dir) in text and "made" in text


async def test_destroy_removes_containers_and_anonymous_volumes_and_is_idempotent(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient, test_image: str
) -> None:
    image = import_image(docker_client, "tcworker-test/with-volume:latest", changes=["VOLUME /data"])
    assert image
    volumes_before = volume_names(docker_client)
    sandbox, run = await _prepare(
        make_engine,
        tmp_path,
        {**_payload(["sh", "-c", "echo x > /data/x"]), "image": "tcworker-test/with-volume:latest"},
    )
    await sandbox.execute(run.payload["command"], RESERVED, run.log)
    await sandbox.execute(["true"], RESERVED, run.log)
    assert len(containers_of(docker_client, run.task_id)) == 2
    assert volume_names(docker_client) - volumes_before, (
        "the image's VOLUME should have made an anonymous volume"
    )
    await sandbox.destroy()
    await sandbox.destroy()
    assert containers_of(docker_client, run.task_id) == []
    assert volume_names(docker_client) - volumes_before == set()


async def test_abort_from_another_thread_kills_the_container(make_engine, tmp_path: Path) -> None:
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["sh", "-c", "echo ready; sleep 600"]))
    try:
        task = asyncio.create_task(sandbox.execute(run.payload["command"], RESERVED, run.log))
        while "ready" not in log_text(run):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(sandbox.abort, CancelReason.WORKER_STOPPING)
        result = await asyncio.wait_for(task, 20)
    finally:
        await sandbox.destroy()
    assert result.cancel_reason is CancelReason.WORKER_STOPPING


async def test_unreachable_daemon_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.dockerruns import engine_config

    from tcworker.engines.docker.engine import DockerEngine
    from tcworker.errors import ConfigError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(ConfigError, match="needs a running Docker daemon") as info:
        await DockerEngine().initialise(engine_config(tmp_path))
    assert info.value.exit_code == 73


def _staged_bytes(root: Path) -> int:
    """Bytes actually allocated under ``root``."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


async def test_oversize_artifacts_are_decided_from_headers_not_copied(make_engine, tmp_path: Path) -> None:
    """Issue 14: a file artifact over the limit is decided from the path stat of the archive
    response (a 10 GiB sparse file, dropped unread); in a directory each member from its tar header
    (an 8 MiB member over a 1 MiB limit is skipped in the stream, never written)."""
    script = (
        "truncate -s 10G /big.bin && mkdir /d && head -c 8388608 /dev/zero > /d/over && echo s > /d/small"
    )
    sandbox, run = await _prepare(make_engine, tmp_path, _payload(["sh", "-c", script]))
    staging = tmp_path / "staging"
    limit = 1 << 20
    try:
        result = await sandbox.execute(run.payload["command"], RESERVED, run.log)
        assert result.exit_code == 0, log_text(run)
        started = time.monotonic()
        (big,) = await sandbox.collect_artifact("/big.bin", "file", staging, max_file_bytes=limit)
        elapsed = time.monotonic() - started
        assert big.oversize and big.size == 10 << 30 and not big.path.exists()
        assert elapsed < 20, f"{elapsed:.1f}s for a file decided from its stat"
        files = {
            f.relative_name: f
            for f in await sandbox.collect_artifact("/d", "directory", staging, max_file_bytes=limit)
        }
        assert files["over"].oversize and files["over"].size == 8 << 20 and not files["over"].path.exists()
        assert not files["small"].oversize and files["small"].path.read_bytes() == b"s\n"
        assert _staged_bytes(staging) < limit, "an oversize file was written into staging"
        # without a limit the same member is copied (the limit is what keeps it out)
        files = {f.relative_name: f for f in await sandbox.collect_artifact("/d", "directory", staging)}
        assert files["over"].path.stat().st_size == 8 << 20
    finally:
        await sandbox.destroy()
