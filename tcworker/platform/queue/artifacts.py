"""Artifacts (spec §2.6.8-2.6.12): create, finish, resolve links, answer reads and listings.

Object artifacts register their upload with the object service *in the same transaction* (one
database), which is the local equivalent of the queue calling ``object.createUpload`` to lock
in projectId/uploadId/expires. ``s3`` is not offered: the local platform answers it with 400
and asks for ``object`` (documented deviation).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import slugid

from tcworker.platform.clock import json_ms, now_ms, parse_ms
from tcworker.platform.errors import InputError, RequestConflict, ResourceExpired, ResourceNotFound
from tcworker.platform.objects.service import ObjectService, register_upload
from tcworker.platform.queue import taskstore
from tcworker.platform.queue.credentials import Issuer
from tcworker.platform.store.db import Database
from tcworker.platform.store.models import TaskRecord

AFTER_EXCEPTION_MS = 25 * 60 * 1000
DAY_MS = 24 * 3600 * 1000
#: Longest artifact name accepted. The download credentials carry the name twice (clientId and
#: scope), and the official clients' Hawk header for them passes Hawk's 4096-byte limit from about
#: 1600 characters; 1024 leaves room for long task, worker and project ids.
MAX_NAME_LENGTH = 1024
#: Characters a Hawk header attribute cannot carry; they would reach one through the clientId
#: ``artifact-download/<taskId>/<runId>/<name>`` of the download credentials.
UNDOWNLOADABLE_CHARS = ("\\", '"')
REFERENCE_SCHEMES = ("http", "https")


def name_problem(name: str) -> str | None:
    """Why the official clients could not download an artifact of this name, or None."""
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"artifact name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH} "
            "(longer names make the official client's download request exceed Hawk's header limit)"
        )
    bad = [c for c in UNDOWNLOADABLE_CHARS if c in name]
    if bad:
        return (
            f"artifact name must not contain {' or '.join(bad)} (the official client cannot download "
            "such an artifact: its download credentials carry the name in a Hawk header)"
        )
    return None


def reference_url_problem(url: str) -> str | None:
    """Reference artifacts redirect browsers to their URL: only absolute http/https URLs."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in REFERENCE_SCHEMES or not host:
        return f"reference artifact url must be an absolute http or https URL with a host, got {url[:100]!r}"
    return None


@dataclass(frozen=True)
class Artifact:
    task_id: str
    run_id: int
    name: str
    storage_type: str
    content_type: str
    expires_ms: int
    present: bool
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Artifact:
        return cls(
            row["task_id"],
            row["run_id"],
            row["name"],
            row["storage_type"],
            row["content_type"],
            row["expires_ms"],
            bool(row["present"]),
            json.loads(row["details"]),
        )

    def info(self) -> dict[str, Any]:
        return {
            "storageType": self.storage_type,
            "name": self.name,
            "expires": json_ms(self.expires_ms),
            "contentType": self.content_type,
        }


def _row(conn: sqlite3.Connection, task_id: str, run_id: int, name: str) -> Artifact | None:
    row = conn.execute(
        "SELECT * FROM artifacts WHERE task_id = ? AND run_id = ? AND name = ?", (task_id, run_id, name)
    ).fetchone()
    return None if row is None else Artifact.from_row(row)


def _replaceable(
    old: Artifact, new_type: str, new_content_type: str, details: dict[str, Any], expires_ms: int
) -> bool:
    """Immutability rules: identical, extended expiry, reference→reference/link."""
    if expires_ms < old.expires_ms:
        return False
    if old.storage_type == "reference" and new_type == "link":
        return True
    if old.storage_type == "reference" and new_type == "reference":
        return old.content_type == new_content_type
    if old.storage_type != new_type:
        return False
    if new_type != "link" and old.content_type != new_content_type:
        return False
    keep = {k: v for k, v in old.details.items() if k != "uploadId"}
    return keep == details


class ArtifactService:
    def __init__(self, db: Database, objects: ObjectService, issuer: Issuer) -> None:
        self.db = db
        self.objects = objects
        self.issuer = issuer

    async def create(self, task_id: str, run_id: int, name: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body["storageType"]
        if kind == "s3":
            raise InputError("storageType `s3` is not supported by the local platform; use `object`")
        problem = name_problem(name)
        if problem is None and kind == "reference":
            problem = reference_url_problem(body["url"])
        if problem is not None:
            raise InputError(problem)
        expires_ms = parse_ms(body["expires"])
        content_type = body.get("contentType", "application/binary")
        details: dict[str, Any] = {k: body[k] for k in ("url", "artifact", "reason", "message") if k in body}

        def op(conn: sqlite3.Connection) -> tuple[TaskRecord, Artifact]:
            now = now_ms()
            task = taskstore.load(conn, task_id)
            if task is None or run_id >= len(task.runs):
                raise InputError(f"Task {task_id} has no run {run_id}")
            run = task.runs[run_id]
            if "workerGroup" not in run:
                raise InputError(f"Run {run_id} of task {task_id} was never claimed")
            resolved = parse_ms(run["resolved"]) if "resolved" in run else 0
            if not (
                run["state"] == "running"
                or (run["state"] == "exception" and now < resolved + AFTER_EXCEPTION_MS)
            ):
                raise RequestConflict(
                    f"Run {run_id} of task {task_id} is `{run['state']}`: artifacts are closed"
                )
            if expires_ms < now - 15 * 60 * 1000:
                raise InputError("artifact expires is in the past")
            if expires_ms > task.expires_ms:
                raise InputError("artifact expires after the task expires")
            old = _row(conn, task_id, run_id, name)
            det: dict[str, Any] = dict(details)
            if old is not None:
                if not _replaceable(old, kind, content_type, details, expires_ms):
                    raise RequestConflict(f"artifact {name} already exists with different content")
                if kind == "object" and old.storage_type == "object":
                    det["uploadId"] = old.details["uploadId"]
            if kind == "object":
                det.setdefault("uploadId", slugid.nice())
                object_name = f"t/{task_id}/{run_id}/{name}"
                # An extended artifact expiry extends the object's too (the triple stays consistent).
                conn.execute(
                    "UPDATE objects SET expires_ms = ? WHERE name = ? AND upload_id = ? AND expires_ms < ?",
                    (expires_ms, object_name, det["uploadId"], expires_ms),
                )
                finished = conn.execute(
                    "SELECT finished FROM objects WHERE name = ? AND upload_id = ?",
                    (object_name, det["uploadId"]),
                ).fetchone()
                if finished is None or not finished[0]:
                    register_upload(
                        conn,
                        self.objects.content,
                        object_name,
                        task.definition["projectId"],
                        det["uploadId"],
                        expires_ms,
                        {},
                    )
            conn.execute(
                "INSERT OR REPLACE INTO artifacts (task_id, run_id, name, storage_type, content_type, expires_ms,"
                " present, details) VALUES (?,?,?,?,?,?,?,?)",
                (
                    task_id,
                    run_id,
                    name,
                    kind,
                    content_type,
                    expires_ms,
                    0 if kind == "object" else 1,
                    json.dumps(det),
                ),
            )
            return task, Artifact(
                task_id, run_id, name, kind, content_type, expires_ms, kind != "object", det
            )

        task, art = await self.db.run(op)
        if kind != "object":
            return {"storageType": kind}
        run = task.runs[run_id]
        object_name = f"t/{task_id}/{run_id}/{name}"
        project_id = task.definition["projectId"]
        now = now_ms()
        creds = self.issuer.upload_credentials(
            task_id,
            run_id,
            (run["workerGroup"], run["workerId"]),
            f"object:upload:{project_id}:{object_name}",
            now,
            min(expires_ms, now + DAY_MS),
        )
        return {
            "storageType": "object",
            "name": object_name,
            "projectId": project_id,
            "uploadId": art.details["uploadId"],
            "expires": json_ms(expires_ms),
            "credentials": creds,
        }

    async def finish(self, task_id: str, run_id: int, name: str, upload_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            art = _row(conn, task_id, run_id, name)
            if art is None:
                raise ResourceNotFound(f"artifact {name} not found")
            if art.storage_type != "object":
                raise InputError("finishArtifact only applies to object artifacts")
            if art.details.get("uploadId") != upload_id:
                raise InputError("uploadId does not match the artifact")
            obj = conn.execute(
                "SELECT finished FROM objects WHERE name = ?", (f"t/{task_id}/{run_id}/{name}",)
            ).fetchone()
            if obj is None or not obj["finished"]:
                raise InputError("the object upload has not been finished (call object.finishUpload first)")
            conn.execute(
                "UPDATE artifacts SET present = 1 WHERE task_id = ? AND run_id = ? AND name = ?",
                (task_id, run_id, name),
            )

        await self.db.run(op)

    async def latest_run(self, task_id: str) -> int:
        task = await self.db.read(taskstore.load, task_id)
        if task is None or not task.runs:
            raise ResourceNotFound(f"Task {task_id} not found or has no runs")
        return len(task.runs) - 1

    async def follow(
        self, task_id: str, run_id: int, name: str, authorize: Callable[[list[str]], None]
    ) -> Artifact:
        """Resolve links (authorizing every name on the way); 404 missing, 410 expired, 400 cycle."""
        names = [name]
        while True:
            art = await self.db.read(_row, task_id, run_id, names[-1])
            if art is None or not art.present:
                raise ResourceNotFound(f"artifact {names[-1]} not found on run {run_id} of task {task_id}")
            if art.expires_ms < now_ms():
                raise ResourceExpired(f"artifact {names[-1]} has expired")
            if art.storage_type != "link":
                return art
            target = str(art.details.get("artifact", ""))
            if target in names:
                raise InputError(f"artifact link cycle: {' -> '.join(names + [target])}")
            names.append(target)
            authorize(names)

    async def info(self, task_id: str, run_id: int, name: str) -> dict[str, Any]:
        art = await self.db.read(_row, task_id, run_id, name)
        if art is None or not art.present:
            raise ResourceNotFound(f"artifact {name} not found")
        return art.info()

    async def listing(
        self, task_id: str, run_id: int | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> tuple[int, list[sqlite3.Row]]:
            task = taskstore.load(conn, task_id)
            if task is None or not task.runs:
                raise ResourceNotFound(f"Task {task_id} not found or has no runs")
            rid = len(task.runs) - 1 if run_id is None else run_id
            if rid >= len(task.runs):
                raise ResourceNotFound(f"Run {rid} of task {task_id} not found")
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE task_id = ? AND run_id = ? AND name > ? ORDER BY name LIMIT ?",
                (task_id, rid, after or "", limit + 1),
            ).fetchall()
            return rid, rows

        _, rows = await self.db.read(op)
        page, token = taskstore.page_after(rows, limit, lambda r: r["name"])
        answer: dict[str, Any] = {"artifacts": [Artifact.from_row(r).info() for r in page]}
        if token is not None:
            answer["continuationToken"] = token
        return answer
