"""Content sources of mounts: where the bytes come from and under which key they are stored.

``artifact`` content is downloaded with the run's own (current) task credentials through the
official client (``taskcluster.aio.download.downloadArtifact``: object, s3 and reference
artifacts alike, latest run); ``indexed`` content is first resolved through the index with the
same credentials and then treated as that task's artifact; ``url`` content is a plain aiohttp GET
(http/https only, never with credentials, a few retries for transient errors); ``raw`` and
``base64`` are the payload's own bytes. Every failure to obtain content fails the task
(``TaskFailed``) with a sentence naming the source.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import taskcluster
import taskcluster.aio
import taskcluster.exceptions
from taskcluster.aio.download import downloadArtifact

from tcworker.errors import TaskFailed
from tcworker.mounts.downloads import Fetch, HashingWriter
from tcworker.mounts.spec import Content

URL_ATTEMPTS = 4
URL_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    key: str
    describe: str
    fetch: Fetch
    sha256: str | None


def _status(e: BaseException) -> int | None:
    code = getattr(e, "status_code", None)
    return int(code) if isinstance(code, int) else None


async def resolve(content: Content, queue: Any, index: Any) -> Source:
    """The store key and fetcher of ``content``; ``queue`` and ``index`` are clients with the run's
    current credentials (indexed content resolves its namespace now)."""
    kind = content.kind
    if kind == "raw":
        data = (content.raw or "").encode("utf-8")
        return _inline("raw", data)
    if kind == "base64":
        data = base64.b64decode(content.base64 or "", validate=True)
        return _inline("base64", data)
    if kind == "url":
        return Source(
            f"urlcontent:{content.url}", f"url {content.url}", _url_fetch(content.url), content.sha256
        )
    task_id = content.task_id
    describe = content.describe()
    if kind == "indexed":
        task_id = await _find_indexed(content.namespace, index)
        describe = f"artifact {content.artifact} of task {task_id} (index {content.namespace})"
    return Source(
        f"artifact:{task_id}:{content.artifact}",
        describe,
        _artifact_fetch(task_id, content.artifact, queue),
        content.sha256,
    )


def _inline(kind: str, data: bytes) -> Source:
    digest = hashlib.sha256(data).hexdigest()

    async def fetch(writer_factory: Callable[[], Awaitable[HashingWriter]]) -> None:
        writer = await writer_factory()
        await writer.write(data)

    # Keyed by the bytes' own hash: the same literal in two payloads is stored once.
    return Source(f"{kind}:{digest}", f"{kind} content ({len(data)} bytes)", fetch, digest)


async def _find_indexed(namespace: str, index: Any) -> str:
    try:
        found = await index.findTask(namespace)
    except taskcluster.exceptions.TaskclusterRestFailure as e:
        raise TaskFailed(f"[mounts] cannot find indexed task {namespace!r}: {e}") from e
    except (taskcluster.exceptions.TaskclusterFailure, aiohttp.ClientError, OSError) as e:
        raise TaskFailed(f"[mounts] the index could not be asked for {namespace!r}: {e}") from e
    return str(found["taskId"])


def _artifact_fetch(task_id: str, name: str, queue: Any) -> Fetch:
    async def fetch(writer_factory: Callable[[], Awaitable[HashingWriter]]) -> None:
        try:
            await downloadArtifact(
                taskId=task_id, name=name, queueService=queue, writerFactory=writer_factory
            )
        except taskcluster.exceptions.TaskclusterArtifactError as e:
            raise TaskFailed(f"[mounts] artifact {name} of task {task_id} is an error artifact: {e}") from e
        except taskcluster.exceptions.TaskclusterRestFailure as e:
            raise TaskFailed(
                f"[mounts] cannot download artifact {name} of task {task_id} (HTTP {_status(e)}): {e}"
            ) from e
        except (taskcluster.exceptions.TaskclusterFailure, aiohttp.ClientError, OSError) as e:
            raise TaskFailed(f"[mounts] downloading artifact {name} of task {task_id} failed: {e}") from e

    return fetch


def _url_fetch(url: str) -> Fetch:
    async def fetch(writer_factory: Callable[[], Awaitable[HashingWriter]]) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
        last: str = ""
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(URL_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(2 ** (attempt - 1))
                try:
                    async with session.get(url) as resp:
                        if resp.status != 200:
                            last = f"HTTP {resp.status}"
                            if resp.status < 500 and resp.status not in (408, 429):
                                break
                            continue
                        writer = await writer_factory()
                        if writer.progress is not None and resp.content_length:
                            writer.progress.total = resp.content_length
                        async for chunk in resp.content.iter_chunked(URL_CHUNK):
                            await writer.write(chunk)
                        if resp.content_length is not None and writer.size != resp.content_length:
                            last = f"short read ({writer.size} of {resp.content_length} bytes)"
                            continue
                        return
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    last = str(e) or type(e).__name__
        raise TaskFailed(f"[mounts] cannot download {url}: {last}")

    return fetch
