"""Issue 14: holes found by attacking the platform, each refused with a clear 4xx.

* A chunked PUT (no ``Content-Length``) to an object's ``putUrl`` must be refused as soon as the
  received bytes pass the ``contentLength`` given to createUpload, not after the whole body is on
  disk (the client below never ends its body: the old server waited for it forever).
* Reference artifacts only take ``http``/``https`` URLs (``javascript:`` is refused).
* Artifact names the official client cannot download are refused at createArtifact: ``\\`` and
  ``"`` (the download credentials' clientId carries the name, and a Hawk header cannot carry those
  characters) and names over 1024 characters (the Hawk header of the download exceeds 4096 bytes
  from about 1600). A 1024-character name still round-trips through the official helpers.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import slugid
import taskcluster
import taskcluster.upload
from helpers.platformapi import claim_task, create_task, download, rest_error, upload_artifact
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now

MAX_ARTIFACT_NAME = 1024


def _part_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "objects").glob("*/*.part-*"))


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Whatever the server sends back within ``timeout`` (status line and headers at least)."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in got and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        got += data
    return got


def test_chunked_put_over_declared_length_is_refused_before_the_body_ends(pserver: PlatformProcess) -> None:
    obj = taskcluster.Object(pserver.options(maxRetries=0))
    name = f"tcw-test/{slugid.nice()}/chunked.bin"
    resp = obj.createUpload(
        name,
        {
            "projectId": "tcw-test",
            "uploadId": slugid.nice(),
            "expires": from_now(days=1),
            "proposedUploadMethods": {
                "putUrl": {"contentType": "application/octet-stream", "contentLength": 1024}
            },
        },
    )
    url = urllib.parse.urlsplit(resp["uploadMethod"]["putUrl"]["url"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = (
            f"PUT {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        sock.sendall(head)
        chunk = b"x" * 65536
        for _ in range(4):  # 256 KiB for a 1 KiB upload, and the body never ends
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = _read_answer(sock, timeout=10)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), f"no 413 before the body ended: {answer[:300]!r}"
    assert b'"code":"InputTooLarge"' in answer and b"1024" in answer, answer[:600]
    assert _part_files(pserver.data_dir) == []

    # The refused upload left nothing behind: the real upload of the same object still works.
    data = bytes(range(256)) * 4
    taskcluster.upload.uploadFromBuf(
        projectId="tcw-test",
        name=name,
        contentType="application/octet-stream",
        contentLength=len(data),
        expires=resp["expires"],
        uploadId=resp["uploadId"],
        objectService=obj,
        maxRetries=0,
        data=data,
    )
    buf, _ = taskcluster.download.downloadToBuf(name=name, objectService=obj, maxRetries=0)
    assert bytes(buf) == data


def test_chunked_put_of_43_mb_for_1_kib_is_refused_and_leaves_nothing(pserver: PlatformProcess) -> None:
    """The issue's figure: the old server stored all 43 MB, then refused; the data dir must not grow."""
    import requests

    obj = taskcluster.Object(pserver.options(maxRetries=0))
    name = f"tcw-test/{slugid.nice()}/chunked43.bin"
    resp = obj.createUpload(
        name,
        {
            "projectId": "tcw-test",
            "uploadId": slugid.nice(),
            "expires": from_now(days=1),
            "proposedUploadMethods": {
                "putUrl": {"contentType": "application/octet-stream", "contentLength": 1024}
            },
        },
    )
    largest_part = 0

    def body() -> Any:
        nonlocal largest_part
        for _ in range(43 * 16):  # 43 MiB in 64 KiB chunks
            for part in _part_files(pserver.data_dir):
                try:
                    largest_part = max(largest_part, part.stat().st_size)
                except FileNotFoundError:
                    pass
            yield b"y" * 65536

    try:
        answer = requests.put(
            resp["uploadMethod"]["putUrl"]["url"],
            data=body(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert answer.status_code == 413, answer.text[:300]
        assert answer.json()["code"] == "InputTooLarge"
    except requests.ConnectionError:
        pass  # the server may close the connection before the client finished sending
    assert largest_part <= 1 << 20, f"a partial file of {largest_part} bytes was written"
    assert _part_files(pserver.data_dir) == []


@pytest.fixture
def running(root_queue: taskcluster.Queue, queue_id: str) -> dict[str, Any]:
    task_id, _ = create_task(root_queue, queue_id)
    return claim_task(root_queue, queue_id, task_id)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "ftp://example.com/x",
        "http:///no-host",
    ],
)
def test_reference_artifact_only_takes_http_urls(
    pserver: PlatformProcess, running: dict[str, Any], url: str
) -> None:
    rq = pserver.queue(running["credentials"], maxRetries=0)
    task_id = running["status"]["taskId"]
    body = {"storageType": "reference", "url": url, "contentType": "text/html", "expires": from_now(days=1)}
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.createArtifact(task_id, 0, "public/ref.html", body)
    err = rest_error(exc, 400, "InputError")
    assert "http" in err["message"] and "https" in err["message"], err["message"]
    ok = {**body, "url": "https://example.com/report.html"}
    assert rq.createArtifact(task_id, 0, "public/ref.html", ok) == {"storageType": "reference"}


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("public/dir\\file.txt", "\\"),
        ('public/say"hi".txt', '"'),
        ("public/" + "n" * (MAX_ARTIFACT_NAME - 6), str(MAX_ARTIFACT_NAME)),
        ("public/" + "n" * 4000, str(MAX_ARTIFACT_NAME)),
    ],
    ids=["backslash", "double-quote", "1025-chars", "4007-chars"],
)
def test_undownloadable_artifact_names_are_refused(
    pserver: PlatformProcess, running: dict[str, Any], name: str, rule: str
) -> None:
    rq = pserver.queue(running["credentials"], maxRetries=0)
    task_id = running["status"]["taskId"]
    for body in (
        {"storageType": "object", "contentType": "text/plain", "expires": from_now(days=1)},
        {
            "storageType": "error",
            "reason": "file-missing-on-worker",
            "message": "gone",
            "expires": from_now(days=1),
        },
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            rq.createArtifact(task_id, 0, name, body)
        err = rest_error(exc, 400, "InputError")
        assert "artifact name" in err["message"] and rule in err["message"], err["message"]


def test_longest_allowed_artifact_name_downloads_with_the_official_client(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, running: dict[str, Any]
) -> None:
    task_id = running["status"]["taskId"]
    name = "public/" + "n" * (MAX_ARTIFACT_NAME - 7)
    assert len(name) == MAX_ARTIFACT_NAME
    data = b"longest name " * 1000
    upload_artifact(pserver, running["credentials"], task_id, 0, name, data)
    assert download(root_queue, task_id, name, 0)[0] == data
