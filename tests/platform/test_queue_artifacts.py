"""Acceptance (issue 2, item 1): artifacts through the official upload and download helpers.

Object artifacts (`createArtifact(storageType=object)` + `taskcluster.upload.uploadFromBuf` +
`finishArtifact`) of three sizes (dataInline, putUrl, multi-MB), read back with
`taskcluster.download.downloadArtifactToBuf` with and without credentials; `reference`, `link` and
`error` artifacts; listings; the 303 JSON answer of getArtifact; signed URLs for private names.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import requests
import taskcluster
from helpers.platformapi import (
    check_schema,
    check_status,
    claim_task,
    create_task,
    download,
    rest_error,
    run_queue,
    upload_artifact,
)
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now


@pytest.fixture
def running(pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str) -> dict[str, Any]:
    task_id, _ = create_task(root_queue, queue_id)
    return claim_task(root_queue, queue_id, task_id)


@pytest.mark.parametrize(
    ("size", "name"),
    [
        (100, "public/small.txt"),
        (8192 + 1, "public/medium.bin"),
        (6 * 1024 * 1024 + 7, "public/big/large.bin"),
    ],
    ids=["dataInline", "putUrl", "multi-MB"],
)
def test_object_artifact_roundtrip(
    pserver: PlatformProcess,
    root_queue: taskcluster.Queue,
    anon_queue: taskcluster.Queue,
    running: dict[str, Any],
    size: int,
    name: str,
) -> None:
    task_id = running["status"]["taskId"]
    data = os.urandom(size)
    upload_artifact(pserver, running["credentials"], task_id, 0, name, data, "application/x-test")
    for queue in (root_queue, anon_queue):
        got, ctype = download(queue, task_id, name, run_id=0)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest() and len(got) == size
        assert ctype == "application/x-test"
        latest, _ = download(queue, task_id, name)
        assert latest == data
    info = check_schema(root_queue.artifactInfo(task_id, 0, name), "artifact-response")
    assert info["storageType"] == "object" and info["name"] == name


def test_private_artifact_needs_credentials_or_signed_url(
    pserver: PlatformProcess,
    root_queue: taskcluster.Queue,
    anon_queue: taskcluster.Queue,
    running: dict[str, Any],
) -> None:
    task_id = running["status"]["taskId"]
    data = b"secret bytes " * 1000
    upload_artifact(pserver, running["credentials"], task_id, 0, "private/secret.txt", data)
    assert download(root_queue, task_id, "private/secret.txt", 0)[0] == data
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        download(anon_queue, task_id, "private/secret.txt", 0)
    body = rest_error(exc, 403, "InsufficientScopes")
    assert "queue:get-artifact:private/secret.txt" in body["message"]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon_queue.getArtifact(task_id, 0, "private/secret.txt")
    rest_error(exc, 403, "InsufficientScopes")

    url = root_queue.buildSignedUrl("getArtifact", task_id, 0, "private/secret.txt")
    resp = requests.get(url, timeout=30)  # follows the 303 to the object download URL
    assert resp.status_code == 200 and resp.content == data
    url = root_queue.buildSignedUrl("getLatestArtifact", task_id, "private/secret.txt")
    assert requests.get(url, timeout=30).content == data
    expired = root_queue.buildSignedUrl("getArtifact", task_id, 0, "private/secret.txt", expiration=-60)
    assert requests.get(expired, timeout=30, allow_redirects=False).status_code == 401


def test_get_artifact_303_json_body(
    pserver: PlatformProcess, anon_queue: taskcluster.Queue, running: dict[str, Any]
) -> None:
    task_id = running["status"]["taskId"]
    upload_artifact(pserver, running["credentials"], task_id, 0, "public/a.txt", b"hello", "text/plain")
    body = check_schema(anon_queue.getArtifact(task_id, 0, "public/a.txt"), "get-artifact-response")
    assert body["storageType"] == "object"
    assert requests.get(body["url"], timeout=30).content == b"hello"
    raw = requests.get(
        f"{pserver.root_url}/api/queue/v1/task/{task_id}/runs/0/artifacts/public%2Fa.txt",
        allow_redirects=False,
        timeout=30,
    )
    assert raw.status_code == 303
    assert raw.headers["Location"] == raw.json()["url"]
    assert raw.headers.get("x-taskcluster-artifact-storage-type") == "object"
    assert raw.headers["Content-Type"].startswith("application/json")
    latest = check_schema(anon_queue.getLatestArtifact(task_id, "public/a.txt"), "get-artifact-response")
    assert latest["storageType"] == "object"


def test_reference_link_error_and_listing(
    pserver: PlatformProcess,
    root_queue: taskcluster.Queue,
    anon_queue: taskcluster.Queue,
    running: dict[str, Any],
) -> None:
    task_id = running["status"]["taskId"]
    creds = running["credentials"]
    rq = run_queue(pserver, running)
    data = b"target artifact body"
    upload_artifact(pserver, creds, task_id, 0, "public/target.txt", data, "text/plain")
    target_url = anon_queue.getArtifact(task_id, 0, "public/target.txt")["url"]
    expires = from_now(days=1)

    resp = rq.createArtifact(
        task_id,
        0,
        "public/ref.txt",
        {"storageType": "reference", "url": target_url, "contentType": "text/plain", "expires": expires},
    )
    assert check_schema(resp, "post-artifact-response") == {"storageType": "reference"}
    ref = check_schema(anon_queue.getArtifact(task_id, 0, "public/ref.txt"), "get-artifact-response")
    assert ref == {"storageType": "reference", "url": target_url}
    assert download(anon_queue, task_id, "public/ref.txt", 0)[0] == data

    resp = rq.createArtifact(
        task_id,
        0,
        "public/link.txt",
        {"storageType": "link", "artifact": "public/target.txt", "expires": expires},
    )
    assert check_schema(resp, "post-artifact-response") == {"storageType": "link"}
    linked = check_schema(anon_queue.getArtifact(task_id, 0, "public/link.txt"), "get-artifact-response")
    assert linked["storageType"] == "object"
    assert requests.get(linked["url"], timeout=30).content == data
    assert download(anon_queue, task_id, "public/link.txt", 0)[0] == data
    # a public link to a private target still needs the target's scope
    upload_artifact(pserver, creds, task_id, 0, "private/p.txt", b"p")
    rq.createArtifact(
        task_id,
        0,
        "public/to-private",
        {"storageType": "link", "artifact": "private/p.txt", "expires": expires},
    )
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon_queue.getArtifact(task_id, 0, "public/to-private")
    assert "queue:get-artifact:private/p.txt" in rest_error(exc, 403, "InsufficientScopes")["message"]

    resp = rq.createArtifact(
        task_id,
        0,
        "public/missing.log",
        {
            "storageType": "error",
            "reason": "file-missing-on-worker",
            "message": "no such file",
            "expires": expires,
        },
    )
    assert check_schema(resp, "post-artifact-response") == {"storageType": "error"}
    with pytest.raises(taskcluster.TaskclusterArtifactError) as aerr:
        download(anon_queue, task_id, "public/missing.log", 0)
    assert aerr.value.reason == "file-missing-on-worker"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon_queue.getArtifact(task_id, 0, "public/missing.log")
    assert exc.value.status_code == 424
    assert (
        exc.value.body["reason"] == "file-missing-on-worker" and exc.value.body["message"] == "no such file"
    )
    content = check_schema(anon_queue.artifact(task_id, 0, "public/missing.log"), "artifact-content-response")
    assert content["storageType"] == "error"

    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon_queue.getArtifact(task_id, 0, "public/never-created")
    rest_error(exc, 404, "ResourceNotFound")

    names = {
        "public/target.txt",
        "public/ref.txt",
        "public/link.txt",
        "private/p.txt",
        "public/to-private",
        "public/missing.log",
    }
    listing = check_schema(anon_queue.listArtifacts(task_id, 0), "list-artifacts-response")
    assert {a["name"] for a in listing["artifacts"]} == names
    assert [a["name"] for a in listing["artifacts"]] == sorted(a["name"] for a in listing["artifacts"])
    types = {a["name"]: a["storageType"] for a in listing["artifacts"]}
    assert types["public/ref.txt"] == "reference" and types["public/link.txt"] == "link"
    assert types["public/missing.log"] == "error" and types["public/target.txt"] == "object"
    latest = check_schema(anon_queue.listLatestArtifacts(task_id), "list-artifacts-response")
    assert {a["name"] for a in latest["artifacts"]} == names
    pages: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 2}
    while True:  # follow continuationToken by hand, as paginationHandler does
        page = check_schema(anon_queue.listArtifacts(task_id, 0, query=query), "list-artifacts-response")
        assert len(page["artifacts"]) <= 2
        pages.append(page)
        if "continuationToken" not in page:
            break
        query = {"limit": 2, "continuationToken": page["continuationToken"]}
        assert len(pages) < 10, "pagination does not end"
    assert [a["name"] for p in pages for a in p["artifacts"]] == [a["name"] for a in listing["artifacts"]]
    assert len(pages) >= 3

    # link cycles are refused, not followed forever
    rq.createArtifact(
        task_id,
        0,
        "public/cycle-a",
        {"storageType": "link", "artifact": "public/cycle-b", "expires": expires},
    )
    rq.createArtifact(
        task_id,
        0,
        "public/cycle-b",
        {"storageType": "link", "artifact": "public/cycle-a", "expires": expires},
    )
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon_queue.getArtifact(task_id, 0, "public/cycle-a")
    rest_error(exc, 400)

    assert check_status(rq.reportCompleted(task_id, 0))["state"] == "completed"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.createArtifact(
            task_id,
            0,
            "public/late.txt",
            {"storageType": "reference", "url": target_url, "contentType": "text/plain", "expires": expires},
        )
    rest_error(exc, 409, "RequestConflict")


def test_artifact_immutability_and_bad_requests(pserver: PlatformProcess, running: dict[str, Any]) -> None:
    task_id = running["status"]["taskId"]
    rq = run_queue(pserver, running)
    expires = from_now(days=1)
    ref = {
        "storageType": "reference",
        "url": "https://example.com/a",
        "contentType": "text/plain",
        "expires": expires,
    }
    rq.createArtifact(task_id, 0, "public/r", ref)
    assert rq.createArtifact(task_id, 0, "public/r", ref) == {"storageType": "reference"}
    rq.createArtifact(
        task_id, 0, "public/r", dict(ref, url="https://example.com/b")
    )  # reference → new URL ok
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.createArtifact(task_id, 0, "public/r", dict(ref, contentType="text/html"))
    rest_error(exc, 409, "RequestConflict")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.createArtifact(
            task_id,
            0,
            "public/o",
            {"storageType": "error", "reason": "bogus", "message": "x", "expires": expires},
        )
    rest_error(exc, 400, "InputValidationError")

    task_expires = pserver.queue(maxRetries=0).task(task_id)["expires"]
    for bad_expires in (from_now(days=800), from_now(minutes=-30)):  # after task.expires / long past
        assert bad_expires > task_expires or bad_expires < from_now()
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            rq.createArtifact(task_id, 0, "public/bad-expiry", dict(ref, expires=bad_expires))
        rest_error(exc, 400)

    # finishArtifact before the object upload finished → 400; wrong uploadId → 400
    resp = rq.createArtifact(
        task_id,
        0,
        "public/unfinished",
        {"storageType": "object", "contentType": "text/plain", "expires": expires},
    )
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.finishArtifact(task_id, 0, "public/unfinished", {"uploadId": resp["uploadId"]})
    rest_error(exc, 400)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.finishArtifact(task_id, 0, "public/r", {"uploadId": resp["uploadId"]})
    rest_error(exc, 400)
    # an unfinished object artifact is not downloadable
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        pserver.queue(maxRetries=0).getArtifact(task_id, 0, "public/unfinished")
    rest_error(exc, 404)


def test_create_artifact_unknown_run_is_400(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, _ = create_task(root_queue, queue_id)
    body = {
        "storageType": "reference",
        "url": "https://example.com/",
        "contentType": "text/plain",
        "expires": from_now(days=1),
    }
    for run_id in (0, 5):  # run 0 never claimed, run 5 does not exist
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            root_queue.createArtifact(task_id, run_id, "public/x", body)
        rest_error(exc, 400)


def test_artifacts_allowed_after_exception(pserver: PlatformProcess, running: dict[str, Any]) -> None:
    task_id = running["status"]["taskId"]
    rq = run_queue(pserver, running)
    rq.reportException(task_id, 0, {"reason": "malformed-payload"})
    upload_artifact(
        pserver, running["credentials"], task_id, 0, "public/logs/live.log", b"log after exception"
    )
    assert (
        download(pserver.queue(None, maxRetries=0), task_id, "public/logs/live.log", 0)[0]
        == b"log after exception"
    )


def test_latest_artifact_of_task_without_runs_404(root_queue: taskcluster.Queue, queue_id: str) -> None:
    blocker, _ = create_task(root_queue, queue_id)
    task_id, _ = create_task(root_queue, queue_id, dependencies=[blocker])
    for call in (
        lambda: root_queue.getLatestArtifact(task_id, "public/x"),
        lambda: root_queue.listLatestArtifacts(task_id),
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            call()
        rest_error(exc, 404, "ResourceNotFound")


def test_latest_artifact_is_from_the_latest_run(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    task_id, _ = create_task(root_queue, queue_id, retries=1)
    c0 = claim_task(root_queue, queue_id, task_id)
    upload_artifact(pserver, c0["credentials"], task_id, 0, "public/out.txt", b"run 0")
    run_queue(pserver, c0).reportException(task_id, 0, {"reason": "worker-shutdown"})
    c1 = claim_task(root_queue, queue_id, task_id)
    assert c1["runId"] == 1
    anon = pserver.queue(None, maxRetries=0)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon.getLatestArtifact(task_id, "public/out.txt")  # latest run (1) has no such artifact yet
    rest_error(exc, 404)
    upload_artifact(pserver, c1["credentials"], task_id, 1, "public/out.txt", b"run 1")
    assert download(anon, task_id, "public/out.txt")[0] == b"run 1"
    assert download(anon, task_id, "public/out.txt", 0)[0] == b"run 0"
    assert {a["name"] for a in anon.listLatestArtifacts(task_id)["artifacts"]} == {"public/out.txt"}
