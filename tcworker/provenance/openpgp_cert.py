"""generic-worker ≤ 13's ``features.generateCertificate``: ``public/logs/certificate.json.gpg``.

A clear-signed OpenPGP message (RFC 4880 §7) whose text is a JSON certificate in that era's
shape — ``artifacts`` as a list of ``{"name", "hash": "sha256:<hex>"}``, ``task``, ``taskId``,
``runId``, ``workerGroup``, ``workerId`` and ``extra`` (IP addresses, instance facts) — signed
with the worker's OpenPGP secret key (config ``openpgpSigningKeyLocation``). Anyone holding the
exported public key checks it with ``gpg --verify``. Signing uses ``pysequoia``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pysequoia

from tcworker.provenance.certificate import WorkerFacts, task_definition


class UnusableOpenPGPKey(ValueError):
    """``openpgpSigningKeyLocation`` cannot sign (unreadable, not a secret key, no signing key)."""


class OpenPGPSigner:
    """The worker's OpenPGP signing key, loaded once per worker process."""

    def __init__(self, location: str | Path) -> None:
        path = Path(location)
        try:
            tsk = pysequoia.Tsk.from_bytes(path.read_bytes())
            self._signer = tsk.signer()
            self.fingerprint = str(tsk.extract_certificate().fingerprint)
        except OSError as e:
            raise UnusableOpenPGPKey(f"openpgpSigningKeyLocation: cannot read {path}: {e.strerror}") from e
        except Exception as e:  # pysequoia raises plain exceptions with a Rust backtrace
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UnusableOpenPGPKey(
                f"openpgpSigningKeyLocation: {path} holds no usable OpenPGP secret signing key ({first})"
            ) from e

    def clearsign(self, text: bytes) -> bytes:
        return bytes(pysequoia.sign(self._signer, text, mode=pysequoia.SignatureMode.CLEAR))


def document(
    *, artifacts: Mapping[str, str], task: Mapping[str, Any], task_id: str, run_id: int, facts: WorkerFacts
) -> bytes:
    """The certificate text (2-space indented JSON and a line break, as generic-worker wrote it)."""
    doc = {
        "artifacts": [
            {"name": name, "hash": f"sha256:{digest}"} for name, digest in sorted(artifacts.items())
        ],
        "task": task_definition(task),
        "taskId": task_id,
        "runId": run_id,
        "workerGroup": facts.worker_group,
        "workerId": facts.worker_id,
        "extra": {
            "publicIpAddress": facts.public_ip,
            "privateIpAddress": facts.private_ip,
            "instanceId": facts.instance_id,
            "instanceType": facts.instance_type,
            "region": facts.region,
        },
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
