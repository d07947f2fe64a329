"""Signed SLSA provenance: an in-toto Statement v1 with predicate ``https://slsa.dev/provenance/v1``
in a DSSE envelope signed with the worker's ed25519 key (``public/provenance.intoto.jsonl``).

Mapping of a task run onto SLSA's build model: the *builder* is the worker pool
(``<rootUrl>/worker-manager/<provisionerId>/<workerType>``, the identity that holds the key); the
*build definition* is the task (``buildType`` names this worker's payload format,
``externalParameters`` is the whole task definition, ``internalParameters`` the worker's
identity and engine); *resolved dependencies* are the image and any artifact the run consumed,
with their digests; *subjects* are every object artifact with its sha256. The envelope follows
the DSSE v1 protocol (signature over ``PAE(payloadType, payload)``), so standard tooling
(securesystemslib, in-toto, sigstore's verifiers given the public key) can check it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tcworker.provenance.keys import keyid, signature_valid

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://github.com/taskcluster/taskcluster/tree/main/workers/generic-worker#payload-v1"
DOCKER_BUILD_TYPE = "https://github.com/taskcluster/docker-worker#payload-v1"


def image_dependencies(image: Mapping[str, str] | None, spec: Any, root_url: str) -> list[dict[str, Any]]:
    """resolvedDependencies for the image the commands ran in: the local image by its id and, for
    task / indexed images, the downloaded tarball by its artifact URL and sha256. ``image`` is the
    sandbox's ``image_facts()``; ``spec`` the payload's ``image`` (or the configured image name)."""
    if not image or not image.get("imageHash"):
        return []
    base = root_url.rstrip("/")
    name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, Mapping) else None
    local: dict[str, Any] = {"name": "image", "digest": _digest(image["imageHash"])}
    if name:
        local["uri"] = f"docker-image:{name}"
    out = [local]
    if image.get("imageArtifactHash") and isinstance(spec, Mapping):
        if spec.get("type") == "task-image":
            uri = f"{base}/api/queue/v1/task/{spec.get('taskId')}/artifacts/{spec.get('path')}"
        else:
            uri = f"{base}/api/index/v1/task/{spec.get('namespace')}/artifacts/{spec.get('path')}"
        out.append({"name": "image-tarball", "uri": uri, "digest": _digest(image["imageArtifactHash"])})
    return out


def _digest(value: str) -> dict[str, str]:
    """``sha256:<hex>`` (docker image ids, artifact hashes) → ``{"sha256": "<hex>"}``."""
    algorithm, _, hexdigest = value.partition(":")
    return {algorithm: hexdigest} if hexdigest else {"sha256": value}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(
    *,
    subjects: Mapping[str, str],
    task: Mapping[str, Any],
    task_id: str,
    run_id: int,
    root_url: str,
    task_queue_id: str,
    worker: Mapping[str, Any],
    docker_payload: bool,
    dependencies: Sequence[Mapping[str, Any]],
    started_on: str,
    finished_on: str,
) -> dict[str, Any]:
    """The in-toto statement; ``subjects`` maps artifact name → sha256 hex."""
    base = root_url.rstrip("/")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}} for name, digest in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": DOCKER_BUILD_TYPE if docker_payload else BUILD_TYPE,
                "externalParameters": {"task": dict(task)},
                "internalParameters": {"taskId": task_id, "runId": run_id, "worker": dict(worker)},
                "resolvedDependencies": [dict(d) for d in dependencies],
            },
            "runDetails": {
                "builder": {"id": f"{base}/worker-manager/{task_queue_id}"},
                "metadata": {
                    "invocationId": f"{base}/tasks/{task_id}/runs/{run_id}",
                    "startedOn": started_on,
                    "finishedOn": finished_on,
                },
            },
        },
    }


def envelope(doc: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign ``doc`` (serialised compactly) as a DSSE envelope."""
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid(key), "sig": base64.b64encode(signature).decode()}],
    }


def jsonl(env: Mapping[str, Any]) -> bytes:
    """One envelope per line (the ``.intoto.jsonl`` bundle format)."""
    return (json.dumps(env, sort_keys=True, separators=(",", ":")) + "\n").encode()


def open_envelope(env: Mapping[str, Any], key: Ed25519PublicKey) -> dict[str, Any] | None:
    """The statement inside ``env`` if one of its signatures verifies with ``key``, else ``None``."""
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        signed = pae(str(env["payloadType"]), payload)
        for sig in env.get("signatures") or []:
            if signature_valid(key, base64.b64decode(sig["sig"], validate=True), signed):
                doc = json.loads(payload)
                return doc if isinstance(doc, dict) else None
    except (KeyError, TypeError, ValueError):
        return None
    return None
