"""Worker pools of the chain-of-trust tests: a real ``tcworker run`` process with its own ed25519
key (made by ``tcworker new-ed25519-keypair``) and, on request, an OpenPGP key (made by real
``gpg``), on its own task queue of the session's platform process.

Kept out of ``conftest.py`` so test modules import it by a name no other test folder uses
(several ``conftest`` modules collide when folders are collected together).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.ci import skip_or_fail
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess, clean_env, tcworker_cmd, unique_worker_type, worker_config


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
