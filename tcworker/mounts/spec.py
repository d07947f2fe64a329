"""``payload.mounts`` read into typed mounts, with every payload-level problem listed at once.

The kind follows generic-worker's rule (spec/worker.md §2.5): ``cacheName`` → writable cache,
else ``directory`` → read-only directory, else ``file`` → file mount. Problems that make the
payload wrong — a task of artifact content missing from ``task.dependencies``, a format this
worker cannot decode, a target the engine cannot serve — are collected by ``payload_problems``
and become one malformed-payload naming each of them; everything that can only go wrong while
mounting (a 404, a wrong sha256, an unsafe archive) fails the task later instead.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcworker.mounts.formats import format_problem

WRITABLE_CACHE = "writable-cache"
READ_ONLY_DIRECTORY = "read-only-directory"
FILE = "file"


@dataclass(frozen=True)
class Content:
    """One content source; exactly one of the groups is set."""

    task_id: str = ""
    artifact: str = ""
    namespace: str = ""
    url: str = ""
    raw: str | None = None
    base64: str | None = None
    sha256: str | None = None

    @property
    def kind(self) -> str:
        if self.raw is not None:
            return "raw"
        if self.base64 is not None:
            return "base64"
        if self.url:
            return "url"
        if self.namespace:
            return "indexed"
        return "artifact"

    def describe(self) -> str:
        kind = self.kind
        if kind == "artifact":
            return f"artifact {self.artifact} of task {self.task_id}"
        if kind == "indexed":
            return f"artifact {self.artifact} of indexed task {self.namespace}"
        if kind == "url":
            return f"url {self.url}"
        return f"{kind} content"

    @classmethod
    def from_payload(cls, raw: Mapping[str, Any]) -> Content:
        return cls(
            task_id=str(raw.get("taskId", "")),
            artifact=str(raw.get("artifact", "")),
            namespace=str(raw.get("namespace", "")),
            url=str(raw.get("url", "")),
            raw=raw["raw"] if "raw" in raw else None,
            base64=raw["base64"] if "base64" in raw else None,
            sha256=raw.get("sha256"),
        )


@dataclass(frozen=True)
class Mount:
    kind: str
    target: str  # the payload's `directory` / `file` value
    cache_name: str = ""
    content: Content | None = None
    format: str | None = None

    def describe(self) -> str:
        if self.kind == WRITABLE_CACHE:
            return f"writable cache {self.cache_name!r} at {self.target!r}"
        if self.kind == READ_ONLY_DIRECTORY:
            return f"read-only directory {self.target!r}"
        return f"file {self.target!r}"


def parse_mounts(payload: Mapping[str, Any]) -> list[Mount]:
    """The payload's mounts (already schema-valid) in payload order."""
    out: list[Mount] = []
    for raw in payload.get("mounts") or []:
        content = Content.from_payload(raw["content"]) if isinstance(raw.get("content"), Mapping) else None
        fmt = raw.get("format")
        if "cacheName" in raw:
            out.append(Mount(WRITABLE_CACHE, str(raw["directory"]), str(raw["cacheName"]), content, fmt))
        elif "directory" in raw:
            out.append(Mount(READ_ONLY_DIRECTORY, str(raw["directory"]), "", content, fmt))
        else:
            out.append(Mount(FILE, str(raw["file"]), "", content, fmt))
    return out


def required_scopes(mounts: Sequence[Mount]) -> list[str]:
    return sorted({f"generic-worker:cache:{m.cache_name}" for m in mounts if m.kind == WRITABLE_CACHE})


def payload_problems(mounts: Sequence[Mount], task: Mapping[str, Any], *, engine_name: str) -> list[str]:
    """Every reason the mounts make the payload malformed (empty = fine)."""
    problems: list[str] = []
    dependencies = set(task.get("dependencies") or [])
    missing: list[str] = []
    targets: dict[str, str] = {}
    for m in mounts:
        c = m.content
        if (
            c is not None
            and c.kind == "artifact"
            and c.task_id not in dependencies
            and c.task_id not in missing
        ):
            missing.append(c.task_id)
        if c is not None and c.kind == "url" and not c.url.startswith(("http://", "https://")):
            problems.append(f"[mounts] {m.describe()}: only http(s) URLs can be mounted, not {c.url!r}")
        if c is not None and c.kind == "base64":
            try:
                base64.b64decode(c.base64 or "", validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"[mounts] {m.describe()}: content.base64 is not valid base64")
        if m.format:
            problem = format_problem(m.format, archive=m.kind != FILE)
            if problem:
                problems.append(f"[mounts] {m.describe()}: {problem}")
        if not m.target or "\x00" in m.target:
            problems.append(f"[mounts] {m.describe()}: the target path is empty or invalid")
            continue
        norm = posixpath.normpath(m.target)
        if engine_name == "docker" and (norm.startswith("/") or norm == ".." or norm.startswith("../")):
            problems.append(
                f"[mounts] {m.describe()}: on the docker engine a mount must lie inside the task "
                "directory (a relative path without ..), because only that directory is shared with "
                "the container"
            )
        if norm in (".", "/"):
            problems.append(f"[mounts] {m.describe()}: cannot mount over the task directory or /")
        if norm in targets:
            problems.append(f"[mounts] {m.describe()} and {targets[norm]} use the same target")
        targets[norm] = m.describe()
    for task_id in missing:
        problems.append(
            f"[mounts] task.dependencies needs to include {task_id} since one or more of its "
            "artifacts are mounted"
        )
    return problems
