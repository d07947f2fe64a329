"""The chain-of-trust document (``public/chain-of-trust.json``, spec/worker.md §4.2–§4.5).

One function builds the document from facts the feature gathered (artifact hashes, the task
definition, worker identity, environment); another merges the task's
``chain-of-trust-additional-data.json`` so that the worker's values win on every conflict while
new keys — also nested ones such as ``task.foo`` — are kept. Serialisation is fixed here once
(2-space indent, keys sorted, ASCII, trailing newline) because the signature covers exactly these
bytes and verifiers hash what they download.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COT_VERSION = 1


@dataclass(frozen=True)
class WorkerFacts:
    """Who ran the task and where (the config keys generic-worker reports)."""

    worker_group: str
    worker_id: str
    public_ip: str = ""
    private_ip: str = ""
    instance_id: str = ""
    instance_type: str = ""
    region: str = ""


def environment(facts: WorkerFacts, docker_payload: bool, image: Mapping[str, str] | None) -> dict[str, Any]:
    """``environment`` in generic-worker's shape, or docker-worker's for docker payloads.

    generic-worker: ``privateIpAddress`` always (GW writes ``<nil>`` when unset; we write ""),
    ``publicIpAddress`` only when configured, ``instanceId``/``instanceType``/``region`` always.
    docker-worker: both IP fields always, instance fields only when known, plus ``imageHash``
    and, for task images, ``imageArtifactHash``. ``image`` (the docker engine's facts) is added
    to either shape when the run used an image.
    """
    env: dict[str, Any] = {}
    if docker_payload:
        env["publicIpAddress"] = facts.public_ip
        env["privateIpAddress"] = facts.private_ip
        for key, value in (
            ("instanceId", facts.instance_id),
            ("instanceType", facts.instance_type),
            ("region", facts.region),
        ):
            if value:
                env[key] = value
    else:
        if facts.public_ip:
            env["publicIpAddress"] = facts.public_ip
        env["privateIpAddress"] = facts.private_ip
        env["instanceId"] = facts.instance_id
        env["instanceType"] = facts.instance_type
        env["region"] = facts.region
    for key in ("imageHash", "imageArtifactHash"):
        if image and image.get(key):
            env[key] = image[key]
    return env


def task_definition(task: Mapping[str, Any]) -> dict[str, Any]:
    """The claimed definition, with ``provisionerId``/``workerType`` present even for
    ``taskQueueId``-only tasks (scriptworker's schema requires ``workerType``)."""
    out = json.loads(json.dumps(task))
    queue_id = out.get("taskQueueId")
    if isinstance(queue_id, str) and "/" in queue_id:
        provisioner, _, worker_type = queue_id.partition("/")
        out.setdefault("provisionerId", provisioner)
        out.setdefault("workerType", worker_type)
    return out


def build(
    *,
    artifacts: Mapping[str, str],
    task: Mapping[str, Any],
    task_id: str,
    run_id: int,
    facts: WorkerFacts,
    env: Mapping[str, Any],
) -> dict[str, Any]:
    """The version-1 certificate; ``artifacts`` maps artifact name → sha256 hex."""
    return {
        "chainOfTrustVersion": COT_VERSION,
        "artifacts": {name: {"sha256": digest} for name, digest in sorted(artifacts.items())},
        "task": task_definition(task),
        "taskId": task_id,
        "runId": run_id,
        "workerGroup": facts.worker_group,
        "workerId": facts.worker_id,
        "environment": dict(env),
    }


def merge_additional(additional: Mapping[str, Any], certificate: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: keys only in ``additional`` are kept, ``certificate`` wins on every conflict."""
    merged: dict[str, Any] = dict(additional)
    for key, value in certificate.items():
        extra = merged.get(key)
        if isinstance(value, Mapping) and isinstance(extra, Mapping):
            merged[key] = merge_additional(extra, value)
        else:
            merged[key] = value
    return merged


def serialise(document: Mapping[str, Any]) -> bytes:
    """The exact bytes that are uploaded and signed."""
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("ascii")
