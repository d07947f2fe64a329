"""Engine-level tests of the docker-worker payload options: caches, capabilities, features, images,
``dockerSave``, image loading formats and image garbage collection — against a real dockerd."""

from __future__ import annotations

import gzip
import subprocess
import time
from pathlib import Path

import docker
import pytest
from helpers.dockerimage import TEST_IMAGE, import_image
from helpers.dockerruns import containers_of, log_text, make_run

from tcworker.errors import MalformedPayload, TaskFailed

pytestmark = pytest.mark.docker

RESERVED = {"TASK_ID": "tid", "RUN_ID": "0"}


def _payload(command: list[str], **extra) -> dict:
    return {"image": TEST_IMAGE, "command": command, "maxRunTime": 60, **extra}


async def _run_to_end(engine, tmp_path: Path, payload: dict, scopes: list[str] | None = None, **kw):
    """prepare → execute → destroy; returns (result, run)."""
    run = make_run(tmp_path, payload, scopes=scopes, **kw)
    sandbox = await engine.prepare(run)
    try:
        result = await sandbox.execute(payload["command"], RESERVED, run.log)
    finally:
        await sandbox.destroy()
    return result, run


# -- caches ----------------------------------------------------------------------------------


async def test_cache_written_by_one_task_is_read_by_the_next(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    cache = {"my-cache": "/cache"}
    scopes = ["docker-worker:cache:my-cache"]
    first, run1 = await _run_to_end(
        engine, tmp_path, _payload(["sh", "-c", "echo from-task-1 > /cache/note"], cache=cache), scopes
    )
    assert first.exit_code == 0, log_text(run1)
    second, run2 = await _run_to_end(engine, tmp_path, _payload(["cat", "/cache/note"], cache=cache), scopes)
    assert second.exit_code == 0, log_text(run2)
    assert "from-task-1" in log_text(run2)


async def test_cache_without_its_scope_is_malformed_payload_naming_the_scope(
    make_engine, tmp_path: Path
) -> None:
    engine = await make_engine()
    run = make_run(
        tmp_path, _payload(["true"], cache={"secret-cache": "/c"}), scopes=["docker-worker:cache:other"]
    )
    with pytest.raises(MalformedPayload, match="docker-worker:cache:secret-cache"):
        await engine.prepare(run)


async def test_cache_scope_granted_through_a_role_is_expanded(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    asked: list[list[str]] = []

    async def expand(scopes: list[str]) -> list[str]:
        asked.append(scopes)
        return [*scopes, "docker-worker:cache:*"] if "assume:project:builds" in scopes else scopes

    result, run = await _run_to_end(
        engine,
        tmp_path,
        _payload(["true"], cache={"by-role": "/c"}),
        ["assume:project:builds"],
        expand_scopes=expand,
    )
    assert result.exit_code == 0, log_text(run)
    assert asked == [["assume:project:builds"]]


async def test_exit_code_in_purge_caches_discards_the_cache(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    cache = {"purgeable": "/cache"}
    scopes = ["docker-worker:cache:purgeable"]
    payload = _payload(
        ["sh", "-c", "echo stale > /cache/f; exit 7"], cache=cache, onExitStatus={"purgeCaches": [7]}
    )
    result, run = await _run_to_end(engine, tmp_path, payload, scopes)
    assert result.exit_code == 7
    assert "purgeCaches" in log_text(run)
    check, run2 = await _run_to_end(
        engine, tmp_path, _payload(["sh", "-c", "test ! -e /cache/f"], cache=cache), scopes
    )
    assert check.exit_code == 0, "the purged cache's content survived"


async def test_purge_request_deletes_caches_created_before_its_time(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    cache = {"c1": "/cache"}
    scopes = ["docker-worker:cache:c1"]
    await _run_to_end(engine, tmp_path, _payload(["sh", "-c", "echo x > /cache/f"], cache=cache), scopes)
    assert engine.caches is not None
    assert await engine.caches.purge("c1", before=time.time() - 3600) == 0  # created after that: kept
    assert await engine.caches.purge("c1", before=time.time() + 1) == 1
    check, _ = await _run_to_end(
        engine, tmp_path, _payload(["sh", "-c", "test ! -e /cache/f"], cache=cache), scopes
    )
    assert check.exit_code == 0


async def test_cache_mount_path_must_be_absolute(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    run = make_run(
        tmp_path, _payload(["true"], cache={"c": "relative/path"}), scopes=["docker-worker:cache:c"]
    )
    with pytest.raises(MalformedPayload, match="absolute"):
        await engine.prepare(run)


# -- capabilities and features -------------------------------------------------------------------


async def test_privileged_needs_the_pool_to_allow_it(make_engine, tmp_path: Path) -> None:
    engine = await make_engine(allowPrivileged=False)
    run = make_run(
        tmp_path,
        _payload(["true"], capabilities={"privileged": True}),
        scopes=["docker-worker:capability:privileged"],
    )
    with pytest.raises(MalformedPayload, match="allowPrivileged"):
        await engine.prepare(run)


async def test_privileged_needs_its_scope(make_engine, tmp_path: Path) -> None:
    engine = await make_engine(allowPrivileged=True)
    run = make_run(tmp_path, _payload(["true"], capabilities={"privileged": True}), scopes=[])
    with pytest.raises(MalformedPayload, match="docker-worker:capability:privileged"):
        await engine.prepare(run)


async def test_privileged_and_ptrace_reach_the_container(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    engine = await make_engine(allowPrivileged=True)
    payload = _payload(["true"], capabilities={"privileged": True}, features={"allowPtrace": True})
    run = make_run(
        tmp_path, payload, scopes=["docker-worker:capability:privileged", "docker-worker:feature:allowPtrace"]
    )
    sandbox = await engine.prepare(run)
    try:
        await sandbox.execute(["true"], RESERVED, run.log)
        (container,) = containers_of(docker_client, run.task_id)
        host = container.attrs["HostConfig"]
        assert host["Privileged"] is True
        assert "SYS_PTRACE" in (host.get("CapAdd") or [])
    finally:
        await sandbox.destroy()


async def test_allow_ptrace_needs_its_scope(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    run = make_run(tmp_path, _payload(["true"], features={"allowPtrace": True}), scopes=[])
    with pytest.raises(MalformedPayload, match="docker-worker:feature:allowPtrace"):
        await engine.prepare(run)


@pytest.mark.parametrize(
    "feature", ["taskclusterProxy", "chainOfTrust", "interactive", "dind", "noSuchFeature"]
)
async def test_feature_this_worker_lacks_is_malformed_payload_naming_it(
    make_engine, tmp_path: Path, feature: str
) -> None:
    engine = await make_engine()
    run = make_run(tmp_path, _payload(["true"], features={feature: True}))
    with pytest.raises(MalformedPayload, match=f"features.{feature}"):
        await engine.prepare(run)


async def test_log_features_are_accepted(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    features = {"bufferLog": True, "bulkLog": True, "localLiveLog": True, "taskclusterProxy": False}
    result, run = await _run_to_end(engine, tmp_path, _payload(["echo", "ok"], features=features))
    assert result.exit_code == 0, log_text(run)


# -- images ----------------------------------------------------------------------------------------


async def test_missing_image_without_registry_fails_naming_the_image(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    run = make_run(tmp_path, _payload(["true"], image="tcworker-test/no-such-image:never"))
    with pytest.raises(
        TaskFailed, match=r"Pulling docker image has failed.*tcworker-test/no-such-image:never"
    ):
        await engine.prepare(run)


def _saved_image(client: docker.DockerClient, name: str, dest: Path) -> Path:
    with open(dest, "wb") as f:
        for chunk in client.api.get_image(name):
            f.write(chunk)
    return dest


def _compressed_variants(plain: Path) -> dict[str, Path]:
    """The tarball as plain tar, gzip (Python), zstd and lz4 (Debian's command-line tools)."""
    variants = {"tar": plain, "gz": plain.with_name("image.tar.gz")}
    variants["gz"].write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    variants["zst"] = plain.with_name("image.tar.zst")
    subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(variants["zst"])], check=True)
    variants["lz4"] = plain.with_name("image.tar.lz4")
    subprocess.run(["lz4", "-q", "-f", str(plain), str(variants["lz4"])], check=True)
    return variants


async def test_image_tarballs_load_in_every_format_and_are_loaded_once(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    engine = await make_engine()
    image_id = import_image(
        docker_client, "tcworker-test/formats:latest", extra_files={"etc/marker": b"formats\n"}
    )
    plain = _saved_image(docker_client, "tcworker-test/formats:latest", tmp_path / "image.tar")
    docker_client.images.remove("tcworker-test/formats:latest", force=True)
    variants = _compressed_variants(plain)
    run = make_run(tmp_path, _payload(["true"]))
    images = engine._images  # the engine's store: the same object prepare() uses
    assert images is not None
    for fmt, path in variants.items():
        loaded = await images.load_tarball(path, f"test {fmt} tarball", run.log)
        assert loaded.id == image_id, fmt
        assert loaded.artifact_hash and loaded.artifact_hash.startswith("sha256:")
        docker_client.images.get("tcworker-test/formats:latest")
    again = await images.load_tarball(variants["zst"], "zst again", run.log)
    assert again.id == image_id
    assert "was loaded before" in log_text(run)

    corrupt = tmp_path / "corrupt.tar.zst"
    corrupt.write_bytes(variants["zst"].read_bytes()[:200])
    with pytest.raises(TaskFailed, match="Pulling docker image has failed"):
        await images.load_tarball(corrupt, "a truncated tarball", run.log)


async def test_docker_save_produces_an_image_tarball_that_runs(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    engine = await make_engine()
    payload = _payload(["sh", "-c", "echo saved-state > /state.txt"], features={"dockerSave": True})
    run = make_run(tmp_path, payload)
    sandbox = await engine.prepare(run)
    staging = tmp_path / "staging"
    try:
        result = await sandbox.execute(payload["command"], RESERVED, run.log)
        assert result.exit_code == 0
        extras = await sandbox.post_run_artifacts(staging, result)
    finally:
        await sandbox.destroy()
    (saved,) = extras
    assert saved.name == "public/dockerImage.tar"
    assert saved.file.size > 0 and saved.expires
    repo = f"task-{run.task_id.lower().replace('_', '-')}-0"
    with pytest.raises(docker.errors.ImageNotFound):  # the committed image is removed with the sandbox
        docker_client.images.get(f"{repo}:latest")
    loaded = await engine._images.load_tarball(saved.file.path, "dockerSave output", run.log)
    assert loaded.ref == f"{repo}:latest"
    try:
        out = docker_client.containers.run(loaded.id, ["cat", "/state.txt"], remove=True)
        assert out == b"saved-state\n"
    finally:
        docker_client.images.remove(loaded.ref, force=True)


async def test_garbage_collect_evicts_least_recently_used_unused_images(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    engine = await make_engine()
    victim = "tcworker-test/gc-victim:latest"
    import_image(docker_client, victim, extra_files={"etc/victim": b"1\n"})
    result, _ = await _run_to_end(engine, tmp_path, _payload(["true"], image=victim))
    assert result.exit_code == 0
    await engine.garbage_collect(0)  # enough space: nothing happens
    docker_client.images.get(victim)
    await engine.garbage_collect(1 << 62)  # never enough space: every unused image this worker used goes
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(victim)
    docker_client.images.get(TEST_IMAGE)  # never used by this engine: not its to remove
