"""chainOfTrust, generateCertificate and SLSA provenance on the multiuser engine, checked by
independent verifiers: Mozilla's scriptworker, real gpg, securesystemslib's DSSE, and
``tcworker verify`` (issue 11, acceptance 1–5 for generic-worker payloads).

One honest task (module fixture) is checked by every verifier; tampering tests run their own
tasks because they alter the platform's stored objects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from helpers.cotchecks import (
    CERTIFIED,
    COT,
    GPG_CERT,
    PROVENANCE,
    SIG,
    cot_of,
    object_file,
    run_task,
    sha256,
    tcworker_verify,
)
from helpers.cotpools import Pool
from helpers.workerproc import clean_env
from scriptworker.constants import DEFAULT_CONFIG

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

TASK_SCRIPT = """
set -u
echo hello-cot > a.txt
mkdir -p d && printf 'binary\\001\\002' > d/b.bin
echo "plain-$TASK_ID" > plain.dat
echo '{"foo": "bar", "taskId": "forged", "task": {"foo": 1, "schedulerId": "forged"}}' > chain-of-trust-additional-data.json
if cat "$SIGNING_KEY" > stolen.key 2>/dev/null; then echo KEY-WAS-READ; else echo signing-key-denied; fi
if cat "$OPENPGP_KEY" >> stolen.key 2>/dev/null; then echo OPENPGP-KEY-WAS-READ; else echo openpgp-key-denied; fi
ln -s "$SIGNING_KEY" link-to-key
"""


def cot_payload(pool: Pool, *, extra_features: dict[str, bool] | None = None) -> dict[str, Any]:
    config = pool.worker.config
    return {
        "command": [["sh", "-c", TASK_SCRIPT]],
        "maxRunTime": 120,
        "osGroups": [],  # how scriptworker recognises a generic-worker task
        "env": {"SIGNING_KEY": str(pool.key_path), "OPENPGP_KEY": config["openpgpSigningKeyLocation"]},
        "artifacts": [
            {"type": "file", "path": "a.txt", "name": "public/a.txt"},
            {"type": "directory", "path": "d", "name": "public/d"},
            {"type": "file", "path": "plain.dat", "name": "public/plain.dat", "contentEncoding": "identity"},
            {"type": "file", "path": "stolen.key", "name": "public/stolen.key", "optional": True},
            {"type": "file", "path": "link-to-key", "name": "public/link-to-key", "optional": True},
        ],
        "features": {"chainOfTrust": True, "generateCertificate": True, **(extra_features or {})},
    }


@pytest.fixture(scope="module")
def honest(mu_pool: Pool) -> dict[str, Any]:
    task_id, run = run_task(mu_pool.submitter, mu_pool.worker, cot_payload(mu_pool))
    assert run["state"] == "completed", mu_pool.submitter.explain(task_id)
    body, sig, cot = cot_of(mu_pool.submitter, task_id)
    return {"task_id": task_id, "body": body, "sig": sig, "cot": cot}


PAYLOAD_ARTIFACTS = {"public/a.txt", "public/d/b.bin", "public/plain.dat", "public/stolen.key"}


def test_certificate_lists_every_artifact_task_worker_and_additional_data(
    mu_pool: Pool, honest: dict
) -> None:
    sub, cot, task_id = mu_pool.submitter, honest["cot"], honest["task_id"]
    assert cot["chainOfTrustVersion"] == 1
    assert set(cot["artifacts"]) == PAYLOAD_ARTIFACTS | {CERTIFIED}
    for name, entry in cot["artifacts"].items():
        data, _ = sub.download(task_id, 0, name)
        assert entry == {"sha256": sha256(data)}, name
    task = sub.queue.task(task_id)
    assert {k: v for k, v in cot["task"].items() if k != "foo"} == task
    assert (cot["taskId"], cot["runId"]) == (task_id, 0)
    assert (cot["workerGroup"], cot["workerId"]) == ("cot-tests", mu_pool.worker.worker_id)
    assert cot["environment"] == {"privateIpAddress": "", "instanceId": "", "instanceType": "", "region": ""}
    # scriptworker's own schema for chain-of-trust documents.
    jsonschema.validate(cot, json.loads(Path(DEFAULT_CONFIG["cot_schema_path"]).read_text()))
    # chain-of-trust-additional-data.json: new keys kept (also nested), worker values win.
    assert cot["foo"] == "bar" and cot["task"]["foo"] == 1
    assert cot["task"]["schedulerId"] == "-" and cot["taskId"] == task_id
    # certified.log is the log up to the end of the commands.
    certified, _ = sub.download(task_id, 0, CERTIFIED)
    assert b"=== Task Finished ===" in certified and b"signing-key-denied" in certified


def test_content_types_and_encodings_follow_generic_worker(mu_pool: Pool, honest: dict) -> None:
    arts = mu_pool.submitter.artifacts(honest["task_id"], 0)
    assert arts[COT]["contentType"] == "text/plain; charset=utf-8"
    assert arts[CERTIFIED]["contentType"] == "text/plain; charset=utf-8"
    assert arts[SIG]["contentType"] == "application/octet-stream"
    for name in (COT, SIG, CERTIFIED):
        encoding, raw = mu_pool.submitter.raw_artifact(honest["task_id"], 0, name)
        assert encoding == "gzip", name
    assert len(honest["sig"]) == 64


def test_the_task_cannot_read_either_signing_key_and_the_run_still_signs(mu_pool: Pool, honest: dict) -> None:
    sub, task_id = mu_pool.submitter, honest["task_id"]
    log = sub.log(task_id)
    output = [line.strip() for line in log.splitlines() if not line.startswith("[taskcluster")]
    assert "signing-key-denied" in output and "openpgp-key-denied" in output, log
    assert "KEY-WAS-READ" not in output and "OPENPGP-KEY-WAS-READ" not in output, log
    secret = mu_pool.key_path.read_text().strip()
    stolen, _ = sub.download(task_id, 0, "public/stolen.key")
    assert stolen == b"" and secret.encode() not in stolen
    assert sub.artifacts(task_id, 0)["public/link-to-key"]["storageType"] == "error"
    assert secret not in log
    assert "[chainOfTrust] Signed public/chain-of-trust.json" in log


async def _scriptworker(
    pool: Pool, tmp_path: Path, task_id: str, body: bytes, sig: bytes, impl: str
) -> list[str]:
    import swhelpers

    task = pool.submitter.queue.task(task_id)
    async with aiohttp.ClientSession() as session:
        ctx = swhelpers.context(pool.platform.root_url, tmp_path, {impl: [pool.public_key]}, session)
        paths = sorted(json.loads(body)["artifacts"])
        chain = swhelpers.chain(ctx, {task_id: paths}, {task_id: task})
        link = chain.links[0]
        assert link.worker_impl == impl
        swhelpers.verify_signature(chain, link, body, sig, tmp_path / "cot-docs")
        return await swhelpers.download_and_check(chain)


async def test_scriptworker_verifies_signature_and_every_artifact_hash(
    mu_pool: Pool, honest: dict, tmp_path: Path
) -> None:

    downloaded = await _scriptworker(
        mu_pool, tmp_path, honest["task_id"], honest["body"], honest["sig"], "generic-worker"
    )
    assert sorted(
        Path(p).relative_to(tmp_path / "work" / "cot" / honest["task_id"]).as_posix() for p in downloaded
    ) == sorted(honest["cot"]["artifacts"])


async def test_scriptworker_rejects_a_tampered_document_or_another_key(
    mu_pool: Pool, honest: dict, tmp_path: Path
) -> None:
    from scriptworker.exceptions import CoTError

    body, sig = honest["body"], honest["sig"]
    forged = body.replace(b'"foo": "bar"', b'"foo": "baz"')
    assert forged != body
    with pytest.raises(CoTError, match="ed25519 cot signature doesn"):
        await _scriptworker(mu_pool, tmp_path / "a", honest["task_id"], forged, sig, "generic-worker")
    other = Pool(
        mu_pool.worker,
        mu_pool.submitter,
        mu_pool.platform,
        base64.b64encode(os.urandom(32)).decode(),
        mu_pool.key_path,
    )
    with pytest.raises(CoTError):
        await _scriptworker(other, tmp_path / "b", honest["task_id"], body, sig, "generic-worker")


def test_certificate_json_gpg_verifies_with_real_gpg(mu_pool: Pool, honest: dict, tmp_path: Path) -> None:
    signed, _ = mu_pool.submitter.download(honest["task_id"], 0, GPG_CERT)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**clean_env(), "GNUPGHOME": str(home)}
    assert mu_pool.openpgp_public is not None
    subprocess.run(
        ["gpg", "--batch", "--import", str(mu_pool.openpgp_public)], env=env, check=True, capture_output=True
    )
    good = tmp_path / "certificate.json.gpg"
    good.write_bytes(signed)
    ok = subprocess.run(["gpg", "--batch", "--verify", str(good)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "Good signature" in ok.stderr, ok.stderr
    text = signed.decode()
    cert = json.loads(text[text.index("{") : text.index("\n-----BEGIN PGP SIGNATURE")])
    listed = {a["name"]: a["hash"] for a in cert["artifacts"]}
    assert listed[COT] == "sha256:" + sha256(honest["body"])
    assert listed["public/a.txt"] == "sha256:" + honest["cot"]["artifacts"]["public/a.txt"]["sha256"]
    assert (cert["taskId"], cert["runId"], cert["workerId"]) == (
        honest["task_id"],
        0,
        mu_pool.worker.worker_id,
    )
    bad = tmp_path / "tampered.json.gpg"
    digest = listed["public/a.txt"].removeprefix("sha256:")
    bad.write_bytes(signed.replace(digest.encode(), ("0" * 64).encode()))
    assert bad.read_bytes() != signed
    nok = subprocess.run(["gpg", "--batch", "--verify", str(bad)], env=env, capture_output=True, text=True)
    assert nok.returncode != 0 and "BAD signature" in nok.stderr, nok.stderr
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)


def test_dsse_provenance_verifies_with_securesystemslib_and_names_every_artifact(
    mu_pool: Pool, honest: dict
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    sub, task_id = mu_pool.submitter, honest["task_id"]
    bundle, _ = sub.download(task_id, 0, PROVENANCE)
    lines = bundle.decode().splitlines()
    assert len(lines) == 1
    envelope = Envelope.from_dict(json.loads(lines[0]))
    key = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(base64.b64decode(mu_pool.public_key)))
    assert key.keyid in envelope.verify([key], 1)
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    artifacts = sub.artifacts(task_id, 0)
    objects = {n for n, a in artifacts.items() if a["storageType"] == "object"}
    # Not subjects: the provenance itself, the backing log (uploaded after every feature stopped)
    # and the OpenPGP certificate (generateCertificate stops after chainOfTrust).
    assert set(subjects) == objects - {PROVENANCE, "public/logs/live_backing.log", GPG_CERT}
    for name, digest in subjects.items():
        data, _ = sub.download(task_id, 0, name)
        assert digest == sha256(data), name
    predicate = statement["predicate"]
    assert predicate["runDetails"]["builder"]["id"].endswith(f"/worker-manager/e2e-prov/{sub.worker_type}")
    assert predicate["buildDefinition"]["externalParameters"]["task"] == sub.queue.task(task_id)
    assert predicate["buildDefinition"]["internalParameters"]["taskId"] == task_id
    other = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(os.urandom(32)))
    forged = Envelope.from_dict(json.loads(lines[0]))
    forged.signatures = {other.keyid: next(iter(forged.signatures.values()))}
    with pytest.raises(VerificationError):
        forged.verify([other], 1)
    tampered = Envelope.from_dict(json.loads(lines[0]))
    tampered.payload = envelope.payload.replace(task_id.encode(), b"x" * len(task_id))
    with pytest.raises(VerificationError):
        tampered.verify([key], 1)


def test_tcworker_verify_passes_on_the_honest_task(mu_pool: Pool, honest: dict) -> None:
    result = tcworker_verify(mu_pool.platform.root_url, honest["task_id"], mu_pool.public_key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout and "public/plain.dat" in result.stdout


def test_altered_object_fails_scriptworker_and_tcworker_verify(mu_pool: Pool, tmp_path: Path) -> None:
    from scriptworker.exceptions import CoTError

    sub = mu_pool.submitter
    task_id, run = run_task(sub, mu_pool.worker, cot_payload(mu_pool))
    assert run["state"] == "completed", sub.explain(task_id)
    body, sig, _ = cot_of(sub, task_id)
    stored = object_file(mu_pool.platform.data_dir, f"plain-{task_id}\n".encode())
    stored.write_bytes(f"PLAIN-{task_id}\n".encode())  # same length, different content
    result = tcworker_verify(mu_pool.platform.root_url, task_id, mu_pool.public_key)
    assert result.returncode == 1, result.stdout
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert any("public/plain.dat" in line for line in failed), result.stdout
    assert not any("public/a.txt" in line for line in failed), result.stdout
    with pytest.raises(CoTError, match="BAD HASH"):
        asyncio.run(_scriptworker(mu_pool, tmp_path, task_id, body, sig, "generic-worker"))
    # A forged provenance statement (same envelope, altered payload) fails its DSSE check.
    bundle, _ = sub.download(task_id, 0, PROVENANCE)
    envelope = json.loads(bundle)
    statement = base64.b64decode(envelope["payload"])
    envelope["payload"] = base64.b64encode(statement.replace(b"public/a.txt", b"public/b.txt")).decode()
    forged = (json.dumps(envelope, sort_keys=True, separators=(",", ":")) + "\n").encode()
    object_file(mu_pool.platform.data_dir, bundle).write_bytes(forged)
    result = tcworker_verify(mu_pool.platform.root_url, task_id, mu_pool.public_key)
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert result.returncode == 1 and any(PROVENANCE in line for line in failed), result.stdout


def test_tcworker_verify_with_the_public_key_in_a_file_and_with_a_wrong_key(
    mu_pool: Pool, honest: dict, tmp_path: Path
) -> None:
    key_file = tmp_path / "worker.pub"
    key_file.write_text(mu_pool.public_key)
    assert (
        tcworker_verify(mu_pool.platform.root_url, honest["task_id"], str(key_file), "--run", "0").returncode
        == 0
    )
    no_run = tcworker_verify(mu_pool.platform.root_url, honest["task_id"], mu_pool.public_key, "--run", "1")
    assert no_run.returncode == 1 and "cannot download" in no_run.stdout
    wrong = tcworker_verify(
        mu_pool.platform.root_url, honest["task_id"], base64.b64encode(os.urandom(32)).decode()
    )
    assert wrong.returncode == 1 and "signature" in wrong.stdout


def test_chain_of_trust_with_run_task_as_current_user_is_malformed_payload(mu_pool: Pool) -> None:
    sub = mu_pool.submitter
    queue_id = f"e2e-prov/{sub.worker_type}"
    payload = {
        "command": [["sh", "-c", "echo should-not-run"]],
        "maxRunTime": 60,
        "features": {"chainOfTrust": True, "runTaskAsCurrentUser": True},
    }
    task_id, run = run_task(
        sub, mu_pool.worker, payload, scopes=[f"generic-worker:run-task-as-current-user:{queue_id}"]
    )
    log = sub.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "can read the worker's signing key" in log and "runTaskAsCurrentUser" in log
    assert "Executing command" not in log
    assert COT not in sub.artifacts(task_id, 0)


def test_mounted_content_is_a_resolved_dependency_of_the_provenance(mu_pool: Pool) -> None:
    """What the mounts feature fetched is signed as SLSA ``resolvedDependencies`` with its sha256."""
    sub = mu_pool.submitter
    raw = "mounted-for-provenance\n"
    payload = {
        "command": [["cat", "inputs/raw.txt"]],
        "maxRunTime": 60,
        "mounts": [{"file": "inputs/raw.txt", "content": {"raw": raw}}],
        "features": {"chainOfTrust": True},
    }
    task_id, run = run_task(sub, mu_pool.worker, payload)
    assert run["state"] == "completed", sub.explain(task_id)
    bundle, _ = sub.download(task_id, 0, PROVENANCE)
    statement = json.loads(base64.b64decode(json.loads(bundle.decode().splitlines()[0])["payload"]))
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    mounted = [d for d in dependencies if d.get("name", "").startswith("raw content")]
    assert mounted == [
        {"name": f"raw content ({len(raw)} bytes)", "digest": {"sha256": sha256(raw.encode())}}
    ], dependencies
