"""chainOfTrust on the docker engine (docker-worker payloads, task images, generic payloads in a
container), checked with Mozilla's scriptworker as a docker-worker link — including its
``verify_docker_image_sha`` rule tying ``environment.imageArtifactHash`` to the image task's
certificate — and with ``tcworker verify`` (issue 11, acceptance 1 and 4 for docker)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import swhelpers
from helpers.cotchecks import CERTIFIED, COT, PROVENANCE, SIG, cot_of, run_task, sha256, tcworker_verify
from helpers.cotpools import Pool
from helpers.dockerimage import TEST_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

TARBALL = "public/dockerImage.tar"


def dw_payload(command: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": TEST_IMAGE,
        "command": ["sh", "-c", command],
        "maxRunTime": 120,
        "env": {},
        "features": {"chainOfTrust": True},
        "artifacts": {"public/out.txt": {"type": "file", "path": "/out.txt"}},
        **extra,
    }


@pytest.fixture(scope="module")
def image_task(docker_pool: Pool) -> dict[str, Any]:
    """A docker-worker task that saves its container as an image tarball, with chain of trust."""
    payload = dw_payload("echo from-image-task > /out.txt")
    payload["features"]["dockerSave"] = True
    task_id, run = run_task(docker_pool.submitter, docker_pool.worker, payload)
    assert run["state"] == "completed", docker_pool.submitter.explain(task_id)
    body, sig, cot = cot_of(docker_pool.submitter, task_id)
    return {"task_id": task_id, "body": body, "sig": sig, "cot": cot}


def test_docker_certificate_has_image_hash_and_docker_worker_encodings(
    docker_pool: Pool, image_task: dict
) -> None:
    sub, cot, task_id = docker_pool.submitter, image_task["cot"], image_task["task_id"]
    image_id = docker.from_env().images.get(TEST_IMAGE).id
    assert cot["environment"] == {"publicIpAddress": "", "privateIpAddress": "", "imageHash": image_id}
    assert set(cot["artifacts"]) == {"public/out.txt", TARBALL, CERTIFIED}
    for name, entry in cot["artifacts"].items():
        data, _ = sub.download(task_id, 0, name)
        assert entry["sha256"] == sha256(data), name
    arts = sub.artifacts(task_id, 0)
    assert (arts[COT]["contentType"], arts[SIG]["contentType"]) == ("text/plain", "application/octet-stream")
    assert arts[CERTIFIED]["contentType"] == "text/plain"
    assert sub.raw_artifact(task_id, 0, COT)[0] == "identity"
    assert sub.raw_artifact(task_id, 0, SIG)[0] == "identity"
    assert sub.raw_artifact(task_id, 0, CERTIFIED)[0] == "gzip"


async def _links(
    pool: Pool, tmp_path: Path, docs: dict[str, tuple[bytes, bytes]], names: dict[str, str]
) -> Any:
    tasks = {task_id: pool.submitter.queue.task(task_id) for task_id in docs}
    upstream = {task_id: sorted(json.loads(body)["artifacts"]) for task_id, (body, _) in docs.items()}
    session = aiohttp.ClientSession()
    ctx = swhelpers.context(pool.platform.root_url, tmp_path, {"docker-worker": [pool.public_key]}, session)
    try:
        chain = swhelpers.chain(ctx, upstream, tasks, names)
        for link in chain.links:
            assert link.worker_impl == "docker-worker"
            body, sig = docs[link.task_id]
            swhelpers.verify_signature(chain, link, body, sig, tmp_path / "docs" / link.task_id)
    except BaseException:
        await session.close()
        raise
    return chain, session


def test_task_image_run_passes_scriptworkers_docker_worker_checks(
    docker_pool: Pool, image_task: dict, tmp_path: Path
) -> None:
    from scriptworker.cot.verify import verify_docker_worker_task

    sub, image_task_id = docker_pool.submitter, image_task["task_id"]
    image = {"type": "task-image", "taskId": image_task_id, "path": TARBALL}
    task = sub.task_definition(
        dw_payload("cat /out.txt > /out.txt.copy; cp /out.txt.copy /out.txt", image=image)
    )
    task["dependencies"] = [image_task_id]
    task["extra"] = {"chainOfTrust": {"inputs": {"docker-image": image_task_id}}}
    task_id = sub.create_task(task)
    run = sub.wait_run(task_id, timeout=120, worker=docker_pool.worker)
    assert run["state"] == "completed", sub.explain(task_id)
    body, sig, cot = cot_of(sub, task_id)
    assert (
        cot["environment"]["imageArtifactHash"]
        == "sha256:" + image_task["cot"]["artifacts"][TARBALL]["sha256"]
    )

    async def check() -> None:
        docs = {image_task_id: (image_task["body"], image_task["sig"]), task_id: (body, sig)}
        chain, session = await _links(docker_pool, tmp_path, docs, {image_task_id: "docker-image"})
        try:
            await swhelpers.download_and_check(chain)
            await verify_docker_worker_task(chain, chain.get_link(task_id))
        finally:
            await session.close()

    asyncio.run(check())
    bundle, _ = sub.download(task_id, 0, PROVENANCE)
    statement = json.loads(base64.b64decode(json.loads(bundle)["payload"]))
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    tarball = next(d for d in deps if d["name"] == "image-tarball")
    assert tarball["digest"] == {"sha256": image_task["cot"]["artifacts"][TARBALL]["sha256"]}
    assert tarball["uri"].endswith(f"/task/{image_task_id}/artifacts/{TARBALL}")
    result = tcworker_verify(docker_pool.platform.root_url, task_id, docker_pool.public_key)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scriptworker_rejects_a_forged_docker_worker_document(
    docker_pool: Pool, image_task: dict, tmp_path: Path
) -> None:
    from scriptworker.exceptions import CoTError

    body = image_task["body"].replace(b'"imageHash": "sha256:', b'"imageHash": "sha256:0')

    async def check() -> None:
        _, session = await _links(
            docker_pool, tmp_path, {image_task["task_id"]: (body, image_task["sig"])}, {}
        )
        await session.close()

    with pytest.raises(CoTError, match="docker-worker ed25519 cot signature doesn"):
        asyncio.run(check())


def test_generic_payload_in_a_container_is_certified_with_its_image(docker_pool: Pool) -> None:
    sub = docker_pool.submitter
    payload = {
        "command": [["sh", "-c", "echo generic > g.txt"]],
        "maxRunTime": 60,
        "artifacts": [{"type": "file", "path": "g.txt", "name": "public/g.txt"}],
        "features": {"chainOfTrust": True},
    }
    task_id, run = run_task(sub, docker_pool.worker, payload)
    assert run["state"] == "completed", sub.explain(task_id)
    _, _, cot = cot_of(sub, task_id)
    assert set(cot["artifacts"]) == {"public/g.txt", CERTIFIED}
    assert cot["environment"]["imageHash"] == docker.from_env().images.get(TEST_IMAGE).id
    assert sub.raw_artifact(task_id, 0, COT)[0] == "gzip"  # generic-worker's encodings
    result = tcworker_verify(docker_pool.platform.root_url, task_id, docker_pool.public_key)
    assert result.returncode == 0, result.stdout
    wrong = tcworker_verify(docker_pool.platform.root_url, task_id, base64.b64encode(os.urandom(32)).decode())
    assert wrong.returncode == 1


async def test_enable_provenance_false_publishes_no_provenance(
    docker_pool: Pool, shared_platform: Any, tmp_path: Path
) -> None:
    from helpers.dockerruns import InProcessRun

    async with InProcessRun(shared_platform, tmp_path, enableProvenance=False) as worker:
        resolution, log, task_id = await worker.run(dw_payload("echo x > /out.txt"))
    assert resolution == ("completed", None), log
    names = {a["name"] for a in shared_platform.queue().listArtifacts(task_id, "0")["artifacts"]}
    assert {COT, SIG, CERTIFIED, "public/out.txt"} <= names
    assert PROVENANCE not in names
