"""Helpers for the platform acceptance tests: task bodies, response-schema checks, error checks.

Responses are validated against the *official* resolved schemas in
`/work/shared/upstream/queue-schemas/resolved/` (copied from the Taskcluster monorepo), because
upstream treats an output-schema violation as a bug and the official client relies on the shapes.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import slugid
import taskcluster
import taskcluster.download
import taskcluster.upload

from helpers.tasks import from_now, task_def

# The official resolved schemas: the untouched upstream copy when this machine has it (independent
# of the code under test), else the byte-identical copy the package ships (e.g. on a CI machine).
_UPSTREAM = Path(os.environ.get("TCW_UPSTREAM_SCHEMAS", "/work/shared/upstream/queue-schemas")) / "resolved"
_SHIPPED = Path(__file__).resolve().parents[2] / "tcworker" / "schemas" / "queue"
SCHEMA_ROOT = _UPSTREAM if _UPSTREAM.is_dir() else _SHIPPED
JS_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TIMESTAMP_KEYS = {"scheduled", "started", "resolved", "takenUntil", "deadline", "expires", "created"}
EXCEPTION_REASONS = [
    "worker-shutdown",
    "malformed-payload",
    "resource-unavailable",
    "internal-error",
    "intermittent-task",
]
RETRIED_REASONS = {"worker-shutdown": "retry", "intermittent-task": "task-retry"}


# Static clients and the role the session server `pserver` is started with (tests/platform/conftest.py).
LIMITED = {"clientId": "tcw-test/limited", "accessToken": "limited-token-0123456789abcdefghijklmnop"}
ISSUER = {"clientId": "tcw-test/issuer", "accessToken": "issuer-token-0123456789abcdefghijklmnopqr"}
ROLE_ID = "project:tcw-role"
LIMITED_SCOPES = [
    "queue:create-task:project:none",
    "queue:scheduler-id:-",
    "queue:create-task:lowest:tcw-limited/*",
]
ISSUER_SCOPES = ["assume:" + ROLE_ID, "queue:worker-id:wg/*"]
ROLE_SCOPES = [
    "queue:create-task:project:none",
    "queue:scheduler-id:-",
    "queue:create-task:low:tcw-issuer/*",
    "queue:claim-work:tcw-issuer/*",
]


@functools.cache
def _validator(service: str, name: str) -> jsonschema.Draft6Validator:
    path = SCHEMA_ROOT / service / f"{name}.json"
    assert path.exists(), f"official schema {path} is missing"
    schema = json.loads(path.read_text())
    return jsonschema.Draft6Validator(schema, format_checker=jsonschema.Draft6Validator.FORMAT_CHECKER)


def check_schema(obj: Any, name: str, service: str = "queue", *, response: bool = True) -> Any:
    """Assert `obj` matches the official schema `<service>/<name>.json`; return it for chaining.

    Responses must also write timestamps the JavaScript way (§1.4); requests (`response=False`)
    may use any RFC 3339 precision, as the Python client does.
    """
    errors = sorted(_validator(service, name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, f"{service}/{name}.json violations:\n" + "\n".join(
        f"- {list(e.absolute_path)}: {e.message}" for e in errors[:10]
    )
    if response:
        check_timestamps(obj)
    return obj


def check_timestamps(obj: Any) -> None:
    """Every known timestamp key must be written as JavaScript `Date.toJSON()` does (spec §1.4)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in TIMESTAMP_KEYS and isinstance(value, str):
                assert JS_TIMESTAMP.match(value), f"{key}={value!r} is not YYYY-MM-DDTHH:MM:SS.sssZ"
            else:
                check_timestamps(value)
    elif isinstance(obj, list):
        for item in obj:
            check_timestamps(item)


def check_status(resp: Any) -> dict[str, Any]:
    """Validate a `{"status": ...}` answer and return the status."""
    check_schema(resp, "task-status-response")
    return resp["status"]


def create_task(queue: taskcluster.Queue, queue_id: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    task_id = slugid.nice()
    return task_id, check_status(queue.createTask(task_id, task_def(queue_id, **overrides)))


def claim(
    queue: taskcluster.Queue,
    queue_id: str,
    worker_id: str = "w1",
    tasks: int = 1,
    worker_group: str = "wg",
) -> list[dict[str, Any]]:
    """claimWork and validate the answer; returns the claims (possibly empty after the long poll)."""
    resp = queue.claimWork(queue_id, {"workerGroup": worker_group, "workerId": worker_id, "tasks": tasks})
    check_schema(resp, "claim-work-response")
    return resp["tasks"]


def claim_task(
    queue: taskcluster.Queue, queue_id: str, task_id: str, worker_id: str = "w1"
) -> dict[str, Any]:
    """Claim exactly `task_id` (the only pending task of `queue_id`)."""
    claims = claim(queue, queue_id, worker_id)
    assert [c["status"]["taskId"] for c in claims] == [task_id]
    return claims[0]


def run_queue(platform: Any, claim_: dict[str, Any]) -> taskcluster.Queue:
    """A sync Queue signed with the run's temporary credentials from claimWork / reclaimTask."""
    return platform.queue(claim_["credentials"], maxRetries=0)


def rest_error(excinfo: pytest.ExceptionInfo[Any], status: int, code: str | None = None) -> dict[str, Any]:
    """Check a TaskclusterRestFailure's status, the real error shape and `code`; return the body."""
    err = excinfo.value
    assert getattr(err, "status_code", None) == status, (
        f"expected HTTP {status}, got {err!r} body={getattr(err, 'body', None)}"
    )
    body = err.body
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    if code is not None:
        assert body.get("code") == code, f"expected code {code}, got {body}"
        assert isinstance(body.get("message"), str) and body["message"], body
        assert isinstance(body.get("requestInfo"), dict), body
    return body


def run_states(status: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(state, reasonCreated, reasonResolved) per run: compact for assertions."""
    return [(r["state"], r["reasonCreated"], r.get("reasonResolved")) for r in status["runs"]]


def upload_artifact(
    platform: Any,
    creds: dict[str, str],
    task_id: str,
    run_id: int,
    name: str,
    data: bytes,
    content_type: str = "text/plain",
    expires: str | None = None,
) -> dict[str, Any]:
    """What a worker does: createArtifact → object upload with the returned creds → finishArtifact."""
    rq = platform.queue(creds, maxRetries=0)
    body = {"storageType": "object", "contentType": content_type, "expires": expires or from_now(days=1)}
    resp = check_schema(rq.createArtifact(task_id, run_id, name, body), "post-artifact-response")
    assert resp["storageType"] == "object"
    assert resp["name"] == f"t/{task_id}/{run_id}/{name}"
    assert resp["credentials"]["clientId"].startswith(f"artifact-upload/{task_id}/{run_id}/")
    obj = taskcluster.Object(platform.options(resp["credentials"], maxRetries=0))
    taskcluster.upload.uploadFromBuf(
        projectId=resp["projectId"],
        name=resp["name"],
        contentType=content_type,
        contentLength=len(data),
        expires=resp["expires"],
        uploadId=resp["uploadId"],
        objectService=obj,
        maxRetries=0,
        data=data,
    )
    assert rq.finishArtifact(task_id, run_id, name, {"uploadId": resp["uploadId"]}) is None
    return resp


def download(
    queue: taskcluster.Queue, task_id: str, name: str, run_id: int | None = None
) -> tuple[bytes, str]:
    kwargs: dict[str, Any] = {"taskId": task_id, "name": name, "queueService": queue, "maxRetries": 0}
    if run_id is not None:
        kwargs["runId"] = run_id
    buf, ctype = taskcluster.download.downloadArtifactToBuf(**kwargs)
    return bytes(buf), ctype
