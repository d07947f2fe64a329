"""Drive Mozilla's real ``scriptworker`` chain-of-trust verifier against the local platform.

scriptworker verifies *upstream* tasks of a scriptworker task: a ``ChainOfTrust`` for the
(hypothetical) signing task whose ``payload.upstreamArtifacts`` names what it wants, one
``LinkOfTrust`` per upstream task run by tcworker. Its defaults only trust Mozilla's production
hosts, so ``valid_artifact_rules`` is pointed at the local rootUrl (``http``, ``127.0.0.1:<port>``,
the queue's artifact path) and ``ed25519_public_keys`` holds the test worker's public key for the
worker implementation under test. Everything else — download, signature check, hash check — is
scriptworker's own code.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import slugid
import taskcluster.aio
from scriptworker.constants import DEFAULT_CONFIG
from scriptworker.context import Context
from scriptworker.cot.verify import (
    ChainOfTrust,
    LinkOfTrust,
    download_cot_artifacts,
    verify_link_ed25519_cot_signature,
)

PATH_REGEX = r"^/api/queue/v1/task/(?P<taskId>[^/]+)(/runs/\d+)?/artifacts/(?P<filepath>.*)$"


def context(
    root_url: str, work_dir: Path, keys: Mapping[str, list[str]], session: aiohttp.ClientSession
) -> Context:
    """A scriptworker context trusting the local platform and ``keys`` (worker impl → base64 keys)."""
    parsed = urlparse(root_url)
    config = dict(copy.deepcopy(dict(DEFAULT_CONFIG)))
    config.update(
        work_dir=str(work_dir / "work"),
        artifact_dir=str(work_dir / "artifacts"),
        log_dir=str(work_dir / "logs"),
        task_log_dir=str(work_dir / "artifacts" / "public" / "logs"),
        verify_cot_signature=True,
        ed25519_public_keys={impl: tuple(values) for impl, values in keys.items()},
        valid_artifact_rules=(
            {"schemes": (parsed.scheme,), "netlocs": (parsed.netloc,), "path_regexes": (PATH_REGEX,)},
        ),
        prebuilt_docker_image_task_types="any",
    )
    for key in ("work_dir", "artifact_dir", "log_dir", "task_log_dir"):
        os.makedirs(config[key], exist_ok=True)
    ctx = Context()
    ctx.config = config
    ctx.session = session
    ctx.queue = taskcluster.aio.Queue({"rootUrl": root_url}, session=session)
    return ctx


def signing_task(upstream: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The downstream scriptworker task that consumes ``upstream`` (taskId → artifact paths)."""
    return {
        "provisionerId": "scriptworker-k8s",
        "workerType": "tcworker-cot-test",
        "schedulerId": "-",
        "taskGroupId": slugid.nice(),
        "dependencies": list(upstream),
        "scopes": [],
        "routes": [],
        "tags": {},
        "extra": {},
        "metadata": {"name": "signing", "description": "", "owner": "t@example.com", "source": "https://x"},
        "payload": {
            "upstreamArtifacts": [
                {"taskId": task_id, "taskType": "build", "paths": sorted(paths), "formats": []}
                for task_id, paths in upstream.items()
            ]
        },
    }


def chain(
    ctx: Context,
    upstream: Mapping[str, Iterable[str]],
    tasks: Mapping[str, Mapping[str, Any]],
    names: Mapping[str, str] | None = None,
) -> ChainOfTrust:
    """A chain whose links are the tcworker tasks (``tasks``: taskId → definition; ``names``:
    taskId → link name, which sets scriptworker's task type; default "build")."""
    ctx.task = signing_task(upstream)
    cot = ChainOfTrust(ctx, "signing", task_id=slugid.nice())
    for task_id, definition in tasks.items():
        link = LinkOfTrust(ctx, (names or {}).get(task_id, "build"), task_id)
        link.task = dict(definition)
        cot.links.append(link)
    return cot


def verify_signature(
    cot: ChainOfTrust, link: LinkOfTrust, body: bytes, signature: bytes, where: Path
) -> None:
    """scriptworker's ed25519 check of one link over the given document bytes (sets ``link.cot``)."""
    where.mkdir(parents=True, exist_ok=True)
    unsigned, sig = where / "chain-of-trust.json", where / "chain-of-trust.json.sig"
    unsigned.write_bytes(body)
    sig.write_bytes(signature)
    verify_link_ed25519_cot_signature(cot, link, str(unsigned), str(sig))


async def download_and_check(cot: ChainOfTrust) -> list[str]:
    """scriptworker's ``download_cot_artifacts``: every upstream artifact downloaded and hashed."""
    return list(await download_cot_artifacts(cot))
