"""The object service directly: upload methods, idempotent createUpload, download methods, hashes."""

from __future__ import annotations

import base64
import hashlib

import pytest
import requests
import slugid
import taskcluster
import taskcluster.download
import taskcluster.upload
from helpers.platformapi import check_schema, rest_error
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now


@pytest.fixture
def obj(pserver: PlatformProcess) -> taskcluster.Object:
    return taskcluster.Object(pserver.options(maxRetries=0))


def test_data_inline_upload_and_both_download_methods(obj: taskcluster.Object) -> None:
    name = f"tcw-test/{slugid.nice()}/inline.txt"
    data = b"inline object data"
    req = {
        "projectId": "tcw-test",
        "uploadId": slugid.nice(),
        "expires": from_now(days=1),
        "proposedUploadMethods": {
            "dataInline": {"contentType": "text/plain", "objectData": base64.b64encode(data).decode()}
        },
    }
    check_schema(req, "create-upload-request", "object", response=False)
    resp = check_schema(obj.createUpload(name, req), "create-upload-response", "object")
    assert resp["uploadMethod"] == {"dataInline": True}
    assert (resp["projectId"], resp["uploadId"]) == (req["projectId"], req["uploadId"])
    again = obj.createUpload(name, {**req, "proposedUploadMethods": {}})  # same triple: allowed
    assert again["uploadMethod"] == {}
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        obj.createUpload(name, {**req, "expires": from_now(days=2)})
    rest_error(exc, 409, "RequestConflict")

    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:  # not finished yet
        obj.startDownload(name, {"acceptDownloadMethods": {"getUrl": True}})
    rest_error(exc, 404)

    sha256 = hashlib.sha256(data).hexdigest()
    assert obj.finishUpload(
        name, {"projectId": "tcw-test", "uploadId": req["uploadId"], "hashes": {"sha256": sha256}}
    ) in ({}, None)
    # repeat with matching hashes is fine, a different hash conflicts
    obj.finishUpload(
        name, {"projectId": "tcw-test", "uploadId": req["uploadId"], "hashes": {"sha256": sha256}}
    )
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        obj.finishUpload(
            name, {"projectId": "tcw-test", "uploadId": req["uploadId"], "hashes": {"sha256": "0" * 64}}
        )
    rest_error(exc, 409)

    get_url = check_schema(
        obj.startDownload(name, {"acceptDownloadMethods": {"getUrl": True}}),
        "download-object-response",
        "object",
    )
    assert get_url["method"] == "getUrl" and get_url["hashes"]["sha256"] == sha256
    assert requests.get(get_url["url"], timeout=30).content == data
    simple = check_schema(
        obj.startDownload(name, {"acceptDownloadMethods": {"simple": True}}),
        "download-object-response",
        "object",
    )
    assert simple["method"] == "simple"
    assert requests.get(simple["url"], timeout=30).content == data
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        obj.startDownload(name, {"acceptDownloadMethods": {}})
    rest_error(exc, 406, "NoMatchingMethod")

    meta = check_schema(obj.object(name), "get-object-response", "object")
    assert meta["projectId"] == "tcw-test" and meta["hashes"]["sha256"] == sha256
    buf, ctype = taskcluster.download.downloadToBuf(name=name, objectService=obj, maxRetries=0)
    assert bytes(buf) == data and ctype == "text/plain"


def test_put_url_upload_via_helper(obj: taskcluster.Object, pserver: PlatformProcess) -> None:
    name = f"tcw-test/{slugid.nice()}/put.bin"
    data = bytes(range(256)) * 200  # 51200 bytes → putUrl
    taskcluster.upload.uploadFromBuf(
        projectId="tcw-test",
        name=name,
        contentType="application/octet-stream",
        contentLength=len(data),
        expires=from_now(days=1),
        objectService=obj,
        maxRetries=0,
        data=data,
    )
    buf, _ = taskcluster.download.downloadToBuf(name=name, objectService=obj, maxRetries=0)
    assert bytes(buf) == data
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        taskcluster.Object(pserver.options(None, maxRetries=0)).startDownload(
            name, {"acceptDownloadMethods": {"getUrl": True}}
        )
    rest_error(exc, 403, "InsufficientScopes")


def test_put_url_rejects_wrong_length_and_unknown_object(obj: taskcluster.Object) -> None:
    name = f"tcw-test/{slugid.nice()}/short.bin"
    upload_id = slugid.nice()
    resp = obj.createUpload(
        name,
        {
            "projectId": "tcw-test",
            "uploadId": upload_id,
            "expires": from_now(days=1),
            "proposedUploadMethods": {
                "putUrl": {"contentType": "application/octet-stream", "contentLength": 20000}
            },
        },
    )
    put = resp["uploadMethod"]["putUrl"]
    headers = dict(put["headers"])
    headers["Content-Length"] = "10"
    bad = requests.put(put["url"], data=b"0123456789", headers=headers, timeout=30)
    assert 400 <= bad.status_code < 500, bad.status_code
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        obj.startDownload(f"tcw-test/{slugid.nice()}/nothing", {"acceptDownloadMethods": {"getUrl": True}})
    rest_error(exc, 404, "ResourceNotFound")
