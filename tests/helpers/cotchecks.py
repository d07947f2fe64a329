"""Small helpers the chain-of-trust tests share: run a task to its end, fetch artifacts raw or
decoded, locate an artifact's stored object in the platform's data directory (to tamper with it)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess, clean_env, tcworker_cmd

COT = "public/chain-of-trust.json"
SIG = "public/chain-of-trust.json.sig"
CERTIFIED = "public/logs/certified.log"
PROVENANCE = "public/provenance.intoto.jsonl"
GPG_CERT = "public/logs/certificate.json.gpg"


def run_task(
    submitter: Submitter, worker: WorkerProcess, payload: dict[str, Any], **kw: Any
) -> tuple[str, dict]:
    task_id = submitter.create(payload, retries=0, **kw)
    return task_id, submitter.wait_run(task_id, timeout=120, worker=worker)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cot_of(submitter: Submitter, task_id: str) -> tuple[bytes, bytes, dict[str, Any]]:
    body, _ = submitter.download(task_id, 0, COT)
    sig, _ = submitter.download(task_id, 0, SIG)
    return body, sig, json.loads(body)


def object_file(data_dir: Path, content: bytes) -> Path:
    """The platform's stored object whose bytes are exactly ``content`` (an identity upload)."""
    found = [p for p in (data_dir / "objects").rglob("*") if p.is_file() and p.read_bytes() == content]
    assert len(found) == 1, f"expected one stored object with that content, found {found}"
    return found[0]


def tcworker_verify(
    root_url: str, task_id: str, public_key: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tcworker_cmd("verify", task_id, "--root-url", root_url, "--public-key", public_key, *extra),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(COLUMNS="250"),
        check=False,
    )
