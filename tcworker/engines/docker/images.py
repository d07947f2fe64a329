"""Docker images for docker-worker payloads: resolve, pull or load, remember, garbage-collect.

The four ``image`` forms of the docker-worker payload (spec/worker.md §3.2) end up as one local
image id: a name is used when present locally and pulled otherwise; a ``task-image`` artifact is
downloaded with the official client, decompressed when it is zstd / lz4 (gzip, bzip2 and xz are
read by ``docker load`` itself), loaded, and remembered by the sha256 of the downloaded file so the
same tarball is never loaded twice; an ``indexed-image`` is resolved through the index service
first. Every image used is stamped with its last use so ``collect_garbage`` can evict the least
recently used ones when the disk runs short (spec §1.9).

Failure policy (decided for tcworker, see README): an image that cannot be pulled, downloaded or
loaded makes the run **failed** with ``Pulling docker image has failed.`` (docker-worker's
behaviour), except transient server errors of the platform, which are ``resource-unavailable``.
Every Docker error of a load counts, not only ``APIError``: the SDK reports a tarball the daemon
refuses as ``ImageLoadError``. The engine turns a failure of the *worker's* image (``dockerImage``,
generic-worker payloads) into ``internal-error``: that image is not the task's choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from taskcluster.aio.download import downloadArtifactToFile
from taskcluster.exceptions import TaskclusterArtifactError

from tcworker.engines.base import RunContext, TaskLogWriter
from tcworker.errors import MalformedPayload, ResourceUnavailable, TaskError, TaskFailed
from tcworker.statefile import read_state, write_state
from tcworker.tcapi.clients import status_code, translate

log = logging.getLogger(__name__)

PULL_FAILED = "Pulling docker image has failed."

# (magic bytes, format name, decompressor argv or None when docker load reads it directly)
_FORMATS: tuple[tuple[bytes, str, list[str] | None], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd", ["zstd", "-d", "-c", "-q"]),
    (b"\x04\x22\x4d\x18", "lz4", ["lz4", "-d", "-c", "-q"]),
    (b"\x1f\x8b", "gzip", None),
    (b"BZh", "bzip2", None),
    (b"\xfd7zXZ\x00", "xz", None),
)


@dataclass(frozen=True)
class ImageSpec:
    """The payload's ``image`` in one shape: ``kind`` is docker-image, task-image or indexed-image."""

    kind: str
    name: str = ""
    task_id: str = ""
    namespace: str = ""
    path: str = ""

    @classmethod
    def from_payload(cls, image: Any) -> ImageSpec:
        if isinstance(image, str):
            return cls(kind="docker-image", name=image)
        if isinstance(image, Mapping):
            kind = image.get("type")
            if kind == "docker-image" and isinstance(image.get("name"), str):
                return cls(kind=kind, name=image["name"])
            if (
                kind == "task-image"
                and isinstance(image.get("taskId"), str)
                and isinstance(image.get("path"), str)
            ):
                return cls(kind=kind, task_id=image["taskId"], path=image["path"])
            if (
                kind == "indexed-image"
                and isinstance(image.get("namespace"), str)
                and isinstance(image.get("path"), str)
            ):
                return cls(kind=kind, namespace=image["namespace"], path=image["path"])
        raise MalformedPayload(f"payload.image is not a docker-worker image: {image!r}")

    def describe(self) -> str:
        if self.kind == "docker-image":
            return self.name
        if self.kind == "task-image":
            return f"artifact {self.path!r} of task {self.task_id}"
        return f"artifact {self.path!r} of the task indexed at {self.namespace!r}"


@dataclass(frozen=True)
class ResolvedImage:
    """A local image ready for ``containers.create``; hashes are for the chain of trust."""

    id: str
    ref: str  # the name containers are created from (a tag, or the id itself)
    artifact_hash: str | None = None  # "sha256:<hex>" of the downloaded tarball, artifact images only


def detect_format(path: Path) -> tuple[str, list[str] | None]:
    """The compression of an image tarball from its magic bytes (``"tar"`` when none matches)."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, name, argv in _FORMATS:
        if head.startswith(magic):
            return name, argv
    return "tar", None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    """Local images of one worker; the index file lives at ``state_dir/images.json``."""

    def __init__(self, client: docker.DockerClient, state_dir: Path, downloads_dir: Path) -> None:
        self._client = client
        self._index_path = state_dir / "images.json"
        self._downloads = downloads_dir
        self._lock = asyncio.Lock()

    # -- resolution ----------------------------------------------------------------------

    async def resolve(self, spec: ImageSpec, run: RunContext) -> ResolvedImage:
        """A local image for ``spec``; raises a ``TaskError`` naming the image when impossible."""
        if spec.kind == "docker-image":
            image = await self._local_or_pull(spec.name, run)
        else:
            task_id = spec.task_id if spec.kind == "task-image" else await self._find_indexed(spec, run)
            image = await self._from_artifact(task_id, spec, run)
        await self.touch(image.ref, image.id)
        return image

    async def _local_or_pull(self, name: str, run: RunContext) -> ResolvedImage:
        try:
            img = await asyncio.to_thread(self._client.images.get, name)
            return ResolvedImage(id=str(img.id), ref=name)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            raise TaskFailed(f"{PULL_FAILED} Docker cannot look up image {name!r}: {_explain(e)}") from e
        run.log.info(f"Image {name!r} is not present locally: pulling it")
        try:
            img = await asyncio.to_thread(self._client.images.pull, name)
        except (docker.errors.APIError, docker.errors.DockerException) as e:
            raise TaskFailed(f"{PULL_FAILED} Image {name!r} could not be pulled: {_explain(e)}") from e
        run.log.info(f"Pulled image {name!r} ({img.id})")
        return ResolvedImage(id=str(img.id), ref=name)

    async def _find_indexed(self, spec: ImageSpec, run: RunContext) -> str:
        if run.index is None:
            raise MalformedPayload("indexed images need index access, which this run does not have")
        try:
            found = await run.index.findTask(spec.namespace)
        except Exception as e:
            if status_code(e) == 404:
                raise TaskFailed(
                    f"{PULL_FAILED} No task is indexed at namespace {spec.namespace!r} (indexed image)"
                ) from e
            raise _fetch_error(e, f"index lookup of {spec.namespace!r}") from e
        task_id = str(found["taskId"])
        run.log.info(f"Indexed image namespace {spec.namespace!r} resolves to task {task_id}")
        return task_id

    async def _from_artifact(self, task_id: str, spec: ImageSpec, run: RunContext) -> ResolvedImage:
        if run.queue is None:
            raise MalformedPayload("artifact images need queue access, which this run does not have")
        fd, tmp = await asyncio.to_thread(_temp_download, self._downloads)
        try:
            run.log.info(f"Downloading image artifact {spec.path!r} of task {task_id}")
            with os.fdopen(fd, "w+b") as f:
                await self._download(task_id, spec.path, run, f)
            return await self.load_tarball(tmp, spec.describe(), run.log)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)

    async def load_tarball(self, tarball: Path, what: str, task_log: TaskLogWriter) -> ResolvedImage:
        """``docker load`` an image tarball (plain / gz / bz2 / xz / zst / lz4) unless a tarball
        with the same sha256 was loaded before and its image still exists."""
        digest = await asyncio.to_thread(sha256_file, tarball)
        artifact_hash = f"sha256:{digest}"
        async with self._lock:
            known = self._known_artifact(digest)
            if known is not None and await self._exists(known["id"]):
                task_log.info(f"Image tarball {artifact_hash} was loaded before as {known['id']}: reusing it")
                return ResolvedImage(id=known["id"], ref=known["ref"], artifact_hash=artifact_hash)
            image = await asyncio.to_thread(self._load, tarball, what)
            await asyncio.to_thread(self._remember_artifact, digest, image)
        task_log.info(f"Loaded image {image.ref} ({image.id}) from {what} ({artifact_hash})")
        return ResolvedImage(id=image.id, ref=image.ref, artifact_hash=artifact_hash)

    async def _download(self, task_id: str, name: str, run: RunContext, f: Any) -> None:
        try:
            await downloadArtifactToFile(f, taskId=task_id, name=name, queueService=run.queue)
        except TaskclusterArtifactError as e:
            raise TaskFailed(
                f"{PULL_FAILED} Image artifact {name!r} of task {task_id} is an error artifact: {e}"
            ) from e
        except Exception as e:  # client errors after its own retries, a hash mismatch
            raise _fetch_error(e, f"downloading image artifact {name!r} of task {task_id}") from e

    def _load(self, tarball: Path, what: str) -> ResolvedImage:
        """Decompress when needed and ``docker load`` (runs in a worker thread)."""
        fmt, argv = detect_format(tarball)
        source = tarball
        plain: Path | None = None
        try:
            if argv is not None:
                if shutil.which(argv[0]) is None:
                    raise TaskFailed(
                        f"{PULL_FAILED} {fmt} image tarballs need the {argv[0]!r} program on the worker"
                    )
                plain = tarball.with_name(tarball.name + ".decompressed.tar")
                with open(tarball, "rb") as src, open(plain, "wb") as dst:
                    proc = subprocess.run(argv, stdin=src, stdout=dst, stderr=subprocess.PIPE, check=False)
                if proc.returncode != 0:
                    raise TaskFailed(
                        f"{PULL_FAILED} {what} is not a valid {fmt} stream: "
                        f"{proc.stderr.decode(errors='replace').strip()}"
                    )
                source = plain
            with open(source, "rb") as f:
                try:
                    images = self._client.images.load(f)
                except docker.errors.DockerException as e:
                    # APIError, and ImageLoadError (the daemon's "error" in the load stream, e.g.
                    # a tarball without manifest.json), which is not an APIError.
                    raise TaskFailed(f"{PULL_FAILED} Loading {what} failed: {_explain(e)}") from e
        finally:
            if plain is not None:
                plain.unlink(missing_ok=True)
        if not images:
            raise TaskFailed(f"{PULL_FAILED} {what} holds no docker image")
        img = images[0]
        tags = list(img.tags)
        return ResolvedImage(id=str(img.id), ref=tags[0] if tags else str(img.id))

    async def _exists(self, image_id: str) -> bool:
        try:
            await asyncio.to_thread(self._client.images.get, image_id)
            return True
        except docker.errors.ImageNotFound:
            return False

    # -- the index ---------------------------------------------------------------------------

    def _known_artifact(self, digest: str) -> dict[str, str] | None:
        entry = read_state(self._index_path).get("artifacts", {}).get(digest)
        return entry if isinstance(entry, dict) and "id" in entry and "ref" in entry else None

    def _remember_artifact(self, digest: str, image: ResolvedImage) -> None:
        state = read_state(self._index_path)
        state.setdefault("artifacts", {})[digest] = {"id": image.id, "ref": image.ref, "loaded": time.time()}
        write_state(self._index_path, state)

    async def touch(self, ref: str, image_id: str) -> None:
        """Record that ``ref`` was used now (the LRU order of ``collect_garbage``)."""
        async with self._lock:
            state = read_state(self._index_path)
            state.setdefault("used", {})[ref] = {"id": image_id, "lastUsed": time.time()}
            await asyncio.to_thread(write_state, self._index_path, state)

    # -- garbage collection --------------------------------------------------------------------

    async def collect_garbage(
        self, disk_path: Path, required_free_bytes: int, keep: Collection[str]
    ) -> list[str]:
        """Remove images this worker used, least recently used first, until ``disk_path``'s file
        system has ``required_free_bytes`` free. Images in ``keep`` (ids or refs) or used by any
        container are never removed. Returns the refs removed."""
        removed: list[str] = []
        if _free_bytes(disk_path) >= required_free_bytes:
            return removed
        async with self._lock:
            state = read_state(self._index_path)
            used: dict[str, Any] = state.get("used", {})
            containers = await asyncio.to_thread(self._client.containers.list, all=True)
            busy = {str(c.attrs.get("Image", "")) for c in containers} | set(keep)
            for ref, entry in sorted(used.items(), key=lambda kv: kv[1].get("lastUsed", 0)):
                if _free_bytes(disk_path) >= required_free_bytes:
                    break
                if ref in busy or entry.get("id") in busy:
                    continue
                try:
                    await asyncio.to_thread(self._client.images.remove, ref)
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as e:
                    log.info("image GC: cannot remove %s: %s", ref, _explain(e))
                    continue
                removed.append(ref)
                del used[ref]
                state["artifacts"] = {
                    k: v
                    for k, v in state.get("artifacts", {}).items()
                    if v.get("ref") != ref and v.get("id") != ref
                }
            await asyncio.to_thread(write_state, self._index_path, state)
        if removed:
            log.info("image GC removed %s", ", ".join(removed))
        return removed


def _temp_download(downloads: Path) -> tuple[int, Path]:
    downloads.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="image-", suffix=".download", dir=downloads)
    return fd, Path(name)


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _explain(e: BaseException) -> str:
    explanation = getattr(e, "explanation", None)
    return str(explanation or e)


def _fetch_error(e: BaseException, what: str) -> TaskError:
    """A failed image fetch: a 4xx answer means the image cannot be had (docker-worker: the task
    fails); everything else goes through the one client-error translator (resource-unavailable)."""
    code = status_code(e)
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return TaskFailed(f"{PULL_FAILED} {what} failed ({code}): {e}")
    error = translate(e, what)
    return error if isinstance(error, ResourceUnavailable) else ResourceUnavailable(f"{what}: {e}")
