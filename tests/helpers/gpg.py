"""Helpers for the docker feature tests: a real GnuPG key pair made by gpg, and encryption with gpg.

The key is made by ``/usr/bin/gpg`` in a throw-away GNUPGHOME (short path under /tmp: the agent's
socket path must fit in 108 bytes), exported ASCII-armored for the worker, and the agent is stopped
at teardown. Messages are made with the real ``gpg --encrypt`` so interoperability is what is tested.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.ci import skip_or_fail

GPG = shutil.which("gpg") or "/usr/bin/gpg"


@dataclass
class GpgKey:
    home: Path
    uid: str
    fingerprint: str
    secret_key_file: Path  # ASCII-armored secret key: the worker's openpgpPrivateKeyLocation
    public_key_file: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(
            [GPG, "--batch", "--quiet", "--no-tty", *args],
            input=input,
            capture_output=True,
            env=self.env(),
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def encrypt(self, plaintext: bytes, *, armor: bool = False) -> bytes:
        extra = ["--armor"] if armor else []
        return self.gpg(
            "--trust-model", "always", *extra, "--encrypt", "--recipient", self.fingerprint, input=plaintext
        )

    def message(self, doc: dict[str, Any], *, armor: bool = False) -> str:
        """An encryptedEnv element: base64 of the gpg-encrypted JSON document."""
        return base64.b64encode(self.encrypt(json.dumps(doc).encode(), armor=armor)).decode()


def make_gpg_key(algo: str = "future-default") -> Iterator[GpgKey]:
    """A fresh key pair in its own GNUPGHOME (removed, agent stopped, when the generator closes)."""
    if not Path(GPG).exists():
        skip_or_fail("gpg is not installed (apt-get install gnupg)")
    home = Path(tempfile.mkdtemp(prefix="tcwgpg", dir="/tmp"))
    home.chmod(0o700)
    uid = f"tcworker test {home.name} <worker@example.invalid>"
    key = GpgKey(home, uid, "", home / "worker-secret.asc", home / "worker-public.asc")
    try:
        key.gpg("--passphrase", "", "--quick-gen-key", uid, algo, "default", "never")
        listing = key.gpg("--with-colons", "--list-secret-keys", uid).decode()
        key.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        if algo not in ("default", "future-default"):  # an explicit algorithm makes a sign-only primary
            key.gpg("--passphrase", "", "--quick-add-key", key.fingerprint, algo, "encr", "never")
        key.secret_key_file.write_bytes(key.gpg("--armor", "--export-secret-keys", key.fingerprint))
        key.public_key_file.write_bytes(key.gpg("--armor", "--export", key.fingerprint))
        yield key
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=key.env(), capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
