"""End to end: the generic-worker-style CLI around `run` (issue 3: "CLI like generic-worker").

`new-ed25519-keypair` (private seed to the file, public key to stdout, 75 on failure),
`show-payload-schema` (a schema that accepts what upstream accepts), `--version`, `--help`.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from helpers.workerproc import run_cli

import tcworker

pytestmark = pytest.mark.timeout(60)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=30, cwd=cwd)


def test_new_ed25519_keypair_writes_the_seed_and_prints_the_matching_public_key(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.key"
    result = _cli("new-ed25519-keypair", "--file", str(key_file))
    assert result.returncode == 0, result.stderr
    seed = base64.b64decode(key_file.read_text().strip(), validate=True)
    assert len(seed) == 32, "the file holds the base64 32-byte private key seed (spec §4.4)"
    public = base64.b64decode(result.stdout.strip(), validate=True)
    derived = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert public == derived, "stdout must be the public key of the written private key"
    assert key_file.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"
    assert seed.hex() not in result.stdout + result.stderr


def test_new_ed25519_keypair_failure_exits_75(tmp_path: Path) -> None:
    result = _cli("new-ed25519-keypair", "--file", str(tmp_path / "no" / "such" / "dir" / "k"))
    assert result.returncode == 75, result.stdout + result.stderr


def test_show_payload_schema_accepts_upstream_valid_payloads_and_rejects_invalid_ones() -> None:
    result = _cli("show-payload-schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft6Validator(schema, format_checker=jsonschema.FormatChecker())
    good = {
        "command": [["sh", "-c", "echo hi"]],
        "maxRunTime": 30,
        "env": {"A": "b"},
        "artifacts": [{"type": "file", "path": "a.txt", "name": "public/a.txt", "optional": True}],
        "onExitStatus": {"retry": [2]},
        "features": {"liveLog": False},
    }
    assert not list(validator.iter_errors(good))
    for bad in (
        {},
        {**good, "bogus": 1},
        {**good, "onExitStatus": {"retry": [-1]}},
        {**good, "maxRunTime": "1"},
    ):
        assert list(validator.iter_errors(bad)), f"schema accepted {bad}"


def test_version_and_help() -> None:
    version = _cli("--version")
    assert version.returncode == 0 and tcworker.__version__ in version.stdout
    assert "engine" in version.stdout
    help_text = _cli("run", "--help")
    assert help_text.returncode == 0
    for fragment in ("72", "73", "68", "rootURL", "ed25519SigningKeyLocation", "capacity"):
        assert fragment in help_text.stdout, f"`run --help` lacks {fragment!r}"
