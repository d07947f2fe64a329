"""The artifacts feature: check payload artifacts at start, find and publish them at stop.

At ``start`` explicit ``expires`` values are checked against the task's window (malformed
payload otherwise). At ``stop`` — after the commands, also for failed or aborted runs — every
requested artifact is handed out by the sandbox (with the task's own rights: paths outside the
task directory and escaping symlinks are refused there) and uploaded, up to 10 files at a time,
in name order. Missing or refused ones become ``error`` artifacts; a non-optional one also fails
the task (spec/worker.md §2.3). Artifacts other features make (dockerSave, superseding, chain of
trust) are uploaded by those features themselves through the same ``run.publisher``. A file over
the worker's ``maxArtifactSizeMegabytes`` becomes a ``too-large-file-on-worker`` error artifact,
decided from its size before anything is read or copied: the limit is passed to the engine's
``collect_artifact``, which sizes such files without copying them (multiuser: the task-user helper
sends only the size; docker: the archive's path stat or tar header).
"""

from __future__ import annotations

import asyncio
import filecmp
from dataclasses import dataclass
from pathlib import Path

from tcworker.engines.base import ArtifactFile, ArtifactProblem
from tcworker.errors import MalformedPayload, TaskError, TaskFailed
from tcworker.features import artifact_rules
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.payload import ArtifactSpec

PARALLEL_UPLOADS = 10


@dataclass(frozen=True)
class _Upload:
    name: str
    file: ArtifactFile
    content_type: str
    content_encoding: str
    expires: str
    optional: bool
    display: str = ""  # where the task put it (for the log): the payload path, not a staging copy


class ArtifactsFeature(Feature):
    name = "artifacts"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        # Always requested: engines may produce artifacts even when the payload lists none.
        return ArtifactsTaskFeature(run)


class ArtifactsTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run
        self.started = False
        self._published: dict[str, tuple[str, str]] = {}  # name → (source path, content type)

    @property
    def _max_file_bytes(self) -> int:
        """``maxArtifactSizeMegabytes`` in bytes: engines size bigger files without copying them."""
        return int(self.run.config.maxArtifactSizeMegabytes) * artifact_rules.MIB

    async def start(self) -> None:
        task = self.run.task
        if self.run.payload_kind == "generic":
            problems = [
                p
                for spec in self.run.model.artifacts
                if spec.expires
                and (
                    p := artifact_rules.expiry_problem(
                        spec.name, spec.expires, task["deadline"], task["expires"]
                    )
                )
            ]
            if problems:
                for p in problems:
                    self.run.log.error(p)
                raise MalformedPayload("; ".join(problems))
        self.started = True

    async def stop(self, outcome: RunOutcome) -> None:
        if not self.started or not self.run.model.artifacts:
            return
        staging = self.run.scratch_dir / "staging"
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        errors: list[TaskError] = []
        uploads: list[_Upload] = []
        for i, spec in enumerate(sorted(self.run.model.artifacts, key=lambda s: (s.name, s.path, s.type))):
            if spec.name in self.run.reserved_artifacts:
                self.run.log.warn(
                    f"Artifact {spec.name!r} is reserved by the {self.run.reserved_artifacts[spec.name]} "
                    "feature; the payload artifact of that name is not uploaded"
                )
                continue
            found = await self._collect(spec, staging / str(i), errors)
            uploads.extend(found)
        errors.extend(await self._upload_all(uploads))
        if errors:
            first = errors[0]
            if isinstance(first, TaskFailed):
                self.run.log.error("TASK FAILURE during artifact upload")
            raise first

    async def _collect(self, spec: ArtifactSpec, staging: Path, errors: list[TaskError]) -> list[_Upload]:
        expires = spec.expires or self.run.task["expires"]
        await asyncio.to_thread(staging.mkdir, mode=0o700, exist_ok=True)
        try:
            files = await self.run.sandbox.collect_artifact(
                spec.path, spec.type, staging, max_file_bytes=self._max_file_bytes
            )
        except ArtifactProblem as problem:
            self.run.log.warn(f"Artifact {spec.name!r}: {problem.message}")
            await self.run.publisher.create_error(spec.name, problem.reason, problem.message, expires)
            if not spec.optional:
                errors.append(TaskFailed(f"artifact {spec.name!r}: {problem.message}"))
            return []
        out = []
        for f in files:
            name = spec.name if not f.relative_name else f"{spec.name.rstrip('/')}/{f.relative_name}"
            out.append(
                _Upload(
                    name=name,
                    file=f,
                    content_type=spec.content_type or artifact_rules.guess_content_type(name),
                    content_encoding=spec.content_encoding or artifact_rules.default_content_encoding(name),
                    expires=expires,
                    optional=spec.optional,
                    display=spec.path
                    if not f.relative_name
                    else f"{spec.path.rstrip('/')}/{f.relative_name}",
                )
            )
        return out

    async def _upload_all(self, uploads: list[_Upload]) -> list[TaskError]:
        errors: list[TaskError] = []
        todo: list[_Upload] = []
        for up in uploads:
            source = (str(up.file.path), up.content_type)
            seen = self._published.get(up.name)
            if seen is None:
                self._published[up.name] = source
                todo.append(up)
            elif seen != source and (
                up.file.oversize  # nothing to compare against: not copied
                or not await asyncio.to_thread(
                    _same_content, Path(seen[0]), up.file.path, seen[1], up.content_type
                )
            ):
                errors.append(
                    MalformedPayload(f"artifact {up.name!r} is declared twice with different content or type")
                )
        limit = asyncio.Semaphore(PARALLEL_UPLOADS)
        max_megabytes = int(self.run.config.maxArtifactSizeMegabytes)

        async def one(up: _Upload) -> TaskError | None:
            async with limit:
                too_large = artifact_rules.size_problem(up.name, up.file.size, max_megabytes)
                if too_large is None and up.file.oversize:  # the engine's limit, never read
                    too_large = artifact_rules.size_problem(up.name, self._max_file_bytes + 1, max_megabytes)
                if too_large is not None:
                    return await self._refuse_too_large(up, too_large)
                try:
                    self.run.log.info(
                        f"Uploading artifact {up.name} from {up.display or up.file.path} ({up.content_type})"
                    )
                    await self.run.publisher.upload_file(
                        up.name, up.file.path, up.content_type, up.expires, up.content_encoding
                    )
                except TaskError as e:
                    if up.optional:
                        self.run.log.warn(f"Optional artifact {up.name!r} could not be uploaded: {e}")
                        return None
                    self.run.log.error(f"Artifact {up.name!r} could not be uploaded: {e}")
                    return e
                return None

        results = await asyncio.gather(*(one(up) for up in todo))
        errors.extend(e for e in results if e is not None)
        return errors

    async def _refuse_too_large(self, up: _Upload, message: str) -> TaskError | None:
        """An ``error`` artifact instead of the upload (decided from the size alone: nothing is
        read); a required artifact also fails the task, like a missing one."""
        if up.optional:
            self.run.log.warn(message)
        else:
            self.run.log.error(message)
        await self.run.publisher.create_error(up.name, artifact_rules.TOO_LARGE, message, up.expires)
        return None if up.optional else TaskFailed(message)


def _same_content(a: Path, b: Path, type_a: str, type_b: str) -> bool:
    """Same artifact published twice (a file and again through its directory): allowed."""
    if type_a != type_b:
        return False
    try:
        return a.resolve() == b.resolve() or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False
