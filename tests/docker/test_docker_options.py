"""The docker-worker payload options: caches, capabilities, features (through the worker's real
``TaskRun`` and feature list, in process, against a real platform), and the engine's images,
``dockerSave`` output, image loading formats and image garbage collection — against a real dockerd."""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from helpers.dockerimage import TEST_IMAGE, import_image
from helpers.dockerruns import InProcessRun, containers_of, log_text, make_run
from helpers.platformproc import PlatformProcess

from tcworker.engines.docker.containeropts import container_options
from tcworker.errors import TaskFailed

pytestmark = pytest.mark.docker

RESERVED = {"TASK_ID": "tid", "RUN_ID": "0"}


def _payload(command: list[str], **extra) -> dict:
    return {"image": TEST_IMAGE, "command": command, "maxRunTime": 60, **extra}


@pytest.fixture(scope="module")
def role_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """A platform whose role ``project:builds`` grants every docker-worker cache scope."""
    proc = PlatformProcess(
        tmp_path_factory.mktemp("options-platform") / "data",
        roles=[{"roleId": "project:builds", "scopes": ["docker-worker:cache:*"]}],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
async def worker(
    role_platform: PlatformProcess, tmp_path: Path, test_image: str
) -> AsyncIterator[InProcessRun]:
    async with InProcessRun(role_platform, tmp_path) as w:
        yield w


# -- caches (the caches feature) -----------------------------------------------------------------


async def test_cache_written_by_one_task_is_read_by_the_next(worker: InProcessRun) -> None:
    cache = {"my-cache": "/cache"}
    scopes = ["docker-worker:cache:my-cache"]
    first, log1, _ = await worker.run(
        _payload(["sh", "-c", "echo from-task-1 > /cache/note"], cache=cache), scopes
    )
    assert first == ("completed", None), log1
    second, log2, _ = await worker.run(_payload(["cat", "/cache/note"], cache=cache), scopes)
    assert second == ("completed", None), log2
    assert "from-task-1" in log2


async def test_cache_without_its_scope_is_malformed_payload_naming_the_scope(worker: InProcessRun) -> None:
    resolution, log, _ = await worker.run(
        _payload(["true"], cache={"secret-cache": "/c"}), ["docker-worker:cache:other"]
    )
    assert resolution == ("exception", "malformed-payload"), log
    assert "docker-worker:cache:secret-cache" in log


async def test_cache_scope_granted_through_a_role_is_expanded(worker: InProcessRun) -> None:
    resolution, log, _ = await worker.run(
        _payload(["true"], cache={"by-role": "/c"}), ["assume:project:builds"]
    )
    assert resolution == ("completed", None), log


async def test_exit_code_in_purge_caches_discards_the_cache(worker: InProcessRun) -> None:
    cache = {"purgeable": "/cache"}
    scopes = ["docker-worker:cache:purgeable"]
    payload = _payload(
        ["sh", "-c", "echo stale > /cache/f; exit 7"], cache=cache, onExitStatus={"purgeCaches": [7]}
    )
    resolution, log, _ = await worker.run(payload, scopes)
    assert resolution == ("failed", None), log
    assert "purgeCaches" in log
    check, log2, _ = await worker.run(_payload(["sh", "-c", "test ! -e /cache/f"], cache=cache), scopes)
    assert check == ("completed", None), "the purged cache's content survived:\n" + log2


async def test_purge_request_deletes_caches_created_before_its_time(worker: InProcessRun) -> None:
    cache = {"c1": "/cache"}
    scopes = ["docker-worker:cache:c1"]
    await worker.run(_payload(["sh", "-c", "echo x > /cache/f"], cache=cache), scopes)
    store = worker.feature("dockerCaches").store
    assert await store.purge("c1", before=time.time() - 3600) == 0  # created after that: kept
    assert await store.purge("c1", before=time.time() + 1) == 1
    check, log, _ = await worker.run(_payload(["sh", "-c", "test ! -e /cache/f"], cache=cache), scopes)
    assert check == ("completed", None), log


async def test_cache_mount_path_must_be_absolute(worker: InProcessRun) -> None:
    resolution, log, _ = await worker.run(
        _payload(["true"], cache={"c": "relative/path"}), ["docker-worker:cache:c"]
    )
    assert resolution == ("exception", "malformed-payload"), log
    assert "absolute" in log


# -- capabilities and features -------------------------------------------------------------------


async def test_privileged_needs_the_pool_to_allow_it(
    role_platform: PlatformProcess, tmp_path: Path, test_image: str
) -> None:
    async with InProcessRun(role_platform, tmp_path, allowPrivileged=False) as worker:
        resolution, log, _ = await worker.run(
            _payload(["true"], capabilities={"privileged": True}), ["docker-worker:capability:privileged"]
        )
    assert resolution == ("exception", "malformed-payload"), log
    assert "allowPrivileged" in log


async def test_privileged_needs_its_scope(
    role_platform: PlatformProcess, tmp_path: Path, test_image: str
) -> None:
    async with InProcessRun(role_platform, tmp_path, allowPrivileged=True) as worker:
        resolution, log, _ = await worker.run(_payload(["true"], capabilities={"privileged": True}), [])
    assert resolution == ("exception", "malformed-payload"), log
    assert "docker-worker:capability:privileged" in log


async def test_privileged_and_ptrace_reach_the_container(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """What the capabilities feature chose is what the container gets (checked on the container:
    privileged containers cannot start in every CI sandbox)."""
    engine = await make_engine(allowPrivileged=True)
    payload = _payload(["true"], capabilities={"privileged": True}, features={"allowPtrace": True})
    run = make_run(tmp_path, payload)
    sandbox = await engine.prepare(run)
    try:
        sandbox.configure_container(container_options(payload, allow_privileged=True, video_device=0))
        await sandbox.execute(["true"], RESERVED, run.log)
        (container,) = containers_of(docker_client, run.task_id)
        host = container.attrs["HostConfig"]
        assert host["Privileged"] is True
        assert "SYS_PTRACE" in (host.get("CapAdd") or [])
    finally:
        await sandbox.destroy()


async def test_allow_ptrace_without_privileged_adds_only_sys_ptrace(worker: InProcessRun) -> None:
    resolution, log, _ = await worker.run(
        _payload(["grep", "CapEff", "/proc/self/status"], features={"allowPtrace": True}),
        ["docker-worker:feature:allowPtrace"],
    )
    assert resolution == ("completed", None), log
    cap_eff = int(next(ln for ln in log.splitlines() if ln.startswith("CapEff:")).split()[-1], 16)
    assert cap_eff & (1 << 19) and not cap_eff & (1 << 21), f"{cap_eff:x}"


async def test_allow_ptrace_needs_its_scope(worker: InProcessRun) -> None:
    resolution, log, _ = await worker.run(_payload(["true"], features={"allowPtrace": True}), [])
    assert resolution == ("exception", "malformed-payload"), log
    assert "docker-worker:feature:allowPtrace" in log


@pytest.mark.parametrize("feature", ["dind", "noSuchFeature"])
async def test_feature_this_worker_lacks_is_malformed_payload_naming_it(
    worker: InProcessRun, feature: str
) -> None:
    resolution, log, _ = await worker.run(_payload(["true"], features={feature: True}))
    assert resolution == ("exception", "malformed-payload"), log
    assert f"features.{feature}" in log


async def test_log_features_are_accepted(worker: InProcessRun) -> None:
    features = {"bufferLog": True, "bulkLog": True, "localLiveLog": True, "taskclusterProxy": False}
    resolution, log, _ = await worker.run(_payload(["echo", "ok"], features=features))
    assert resolution == ("completed", None), log


# -- images ----------------------------------------------------------------------------------------


async def test_missing_image_without_registry_fails_naming_the_image(make_engine, tmp_path: Path) -> None:
    engine = await make_engine()
    run = make_run(tmp_path, _payload(["true"], image="tcworker-test/no-such-image:never"))
    with pytest.raises(
        TaskFailed, match=r"Pulling docker image has failed.*tcworker-test/no-such-image:never"
    ):
        await engine.prepare(run)


async def test_image_facts_name_the_image_for_provenance(
    make_engine, tmp_path: Path, test_image: str
) -> None:
    engine = await make_engine()
    sandbox = await engine.prepare(make_run(tmp_path, _payload(["true"])))
    try:
        assert sandbox.image_facts() == {"imageHash": test_image}
    finally:
        await sandbox.destroy()


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
    try:
        result = await sandbox.execute(payload["command"], RESERVED, run.log)
        assert result.exit_code == 0
        saved = await sandbox.save_image(tmp_path / "dockerImage.tar")
    finally:
        await sandbox.destroy()
    assert saved is not None and saved.size > 0
    repo = f"task-{run.task_id.lower().replace('_', '-')}-0"
    with pytest.raises(docker.errors.ImageNotFound):  # the committed image is removed with the sandbox
        docker_client.images.get(f"{repo}:latest")
    loaded = await engine._images.load_tarball(saved.path, "dockerSave output", run.log)
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
    run = make_run(tmp_path, _payload(["true"], image=victim))
    sandbox = await engine.prepare(run)
    try:
        result = await sandbox.execute(["true"], RESERVED, run.log)
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    await engine.garbage_collect(0)  # enough space: nothing happens
    docker_client.images.get(victim)
    await engine.garbage_collect(1 << 62)  # never enough space: every unused image this worker used goes
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(victim)
    docker_client.images.get(TEST_IMAGE)  # never used by this engine: not its to remove
