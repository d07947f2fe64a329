"""Fixtures of the chain-of-trust tests: real worker processes (multiuser and docker engines) with
their own ed25519 key (made by ``tcworker new-ed25519-keypair``) and OpenPGP key (made by real
``gpg``), claiming from the session's real platform process (``shared_platform``).

One worker per engine serves a whole module (each on its own task queue). The multiuser worker
needs root; the docker worker a Docker daemon and busybox-static: without them the tests skip
locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / d) for d in ("e2e", "docker")]

from dockerhelpers import skip_or_fail  # noqa: E402
from e2e_harness import (  # noqa: E402
    Submitter,
    WorkerProcess,
    clean_env,
    tcworker_cmd,
    unique_worker_type,
    worker_config,
)
from platformproc import PlatformProcess  # noqa: E402


@dataclass
class Pool:
    """One worker process, its queue's submitter, and the keys a verifier is given."""

    worker: WorkerProcess
    submitter: Submitter
    platform: PlatformProcess
    public_key: str  # base64, exactly as new-ed25519-keypair printed it
    key_path: Path
    openpgp_public: Path | None = None


def make_ed25519_key(path: Path) -> str:
    """``tcworker new-ed25519-keypair --file`` (the real CLI); returns the public key it printed."""
    result = subprocess.run(
        tcworker_cmd("new-ed25519-keypair", "--file", str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_openpgp_key(directory: Path) -> tuple[Path, Path]:
    """A real gpg signing key: (armored secret key file 0600, armored public key file)."""
    if shutil.which("gpg") is None:
        skip_or_fail("gpg is not installed (apt-get install gnupg)")
    home = directory / "gnupg"
    home.mkdir(mode=0o700)
    env = {**clean_env(), "GNUPGHOME": str(home)}
    uid = "tcworker cot test <cot@example.com>"
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    secret = directory / "openpgp-secret.asc"
    public = directory / "openpgp-public.asc"
    secret.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--armor", "--export-secret-keys", uid],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
    )
    os.chmod(secret, 0o600)
    public.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--armor", "--export", uid], env=env, check=True, capture_output=True
        ).stdout
    )
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)
    return secret, public


@pytest.fixture(scope="module")
def host_root() -> Iterator[Path]:
    """A scratch root task users can traverse (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="tcw-cot-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_pool(
    root: Path, platform: PlatformProcess, name: str, *, openpgp: bool = False, **overrides: Any
) -> Pool:
    workdir = root / name
    workdir.mkdir(mode=0o755)
    private = workdir / "private"
    private.mkdir(mode=0o700)
    key = private / "ed25519.key"
    public = make_ed25519_key(key)
    submitter = Submitter(
        platform.queue(), platform.root_url, unique_worker_type(), platform.root_access_token
    )
    openpgp_public = None
    if openpgp:
        secret, openpgp_public = make_openpgp_key(private)
        overrides["openpgpSigningKeyLocation"] = str(secret)
    config = worker_config(
        platform.root_url,
        platform.root_access_token,
        workdir,
        key,
        workerType=submitter.worker_type,
        workerGroup="cot-tests",
        **overrides,
    )
    worker = WorkerProcess(workdir, config, clean_env()).start()
    return Pool(worker, submitter, platform, public, key, openpgp_public)


@pytest.fixture(scope="module")
def mu_pool(host_root: Path, shared_platform: PlatformProcess) -> Iterator[Pool]:
    """A multiuser worker (capacity 1, so runTaskAsCurrentUser is available) with both keys."""
    if os.geteuid() != 0:
        skip_or_fail("the multiuser engine needs root")
    pool = start_pool(
        host_root,
        shared_platform,
        "multiuser",
        openpgp=True,
        engine="multiuser",
        tasksDir=str(host_root / "multiuser" / "tasks"),
        headlessTasks=True,
    )
    try:
        yield pool
    finally:
        pool.worker.stop()
        print(f"\n===== multiuser worker output (tail) =====\n{pool.worker.tail(8000)}")


@pytest.fixture(scope="module")
def docker_pool(host_root: Path, shared_platform: PlatformProcess) -> Iterator[Pool]:
    """A docker-engine worker with the busybox test image (docker-worker and generic payloads)."""
    import docker
    import docker.errors
    from dockerhelpers import TEST_IMAGE, busybox_path, import_image

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException:
        skip_or_fail("no Docker daemon answers (run .ci/docker-setup.sh as root to start one)")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        if busybox_path() is None:
            skip_or_fail("busybox-static is not installed, so the test image cannot be built")
        import_image(client, TEST_IMAGE)
    pool = start_pool(host_root, shared_platform, "docker", engine="docker", dockerImage=TEST_IMAGE)
    try:
        yield pool
    finally:
        pool.worker.stop()
        client.close()
        print(f"\n===== docker worker output (tail) =====\n{pool.worker.tail(8000)}")
