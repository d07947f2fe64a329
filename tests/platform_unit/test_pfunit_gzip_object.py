"""A putUrl upload sent with Content-Encoding: gzip is stored as sent, served back gzip-encoded,
and hashed over the decoded bytes, so taskcluster.download verifies it (the worker's gzip artifacts)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from typing import Any

import pytest
import requests
import slugid
import taskcluster
import taskcluster.download


def _upload(
    platform: Any, body: bytes, *, encoding: str, plain: bytes
) -> tuple[taskcluster.Object, str, requests.Response]:
    obj = taskcluster.Object(platform.options(maxRetries=0))
    name, upload_id = f"gz/{slugid.nice()}/live.log", slugid.nice()
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    put = obj.createUpload(
        name,
        {
            "projectId": "p",
            "uploadId": upload_id,
            "expires": expires,
            "proposedUploadMethods": {"putUrl": {"contentType": "text/plain", "contentLength": len(body)}},
        },
    )["uploadMethod"]["putUrl"]
    resp = requests.put(
        put["url"], data=body, headers={**put["headers"], "Content-Encoding": encoding}, timeout=30
    )
    if resp.ok:
        hashes = {"sha256": hashlib.sha256(plain).hexdigest(), "sha512": hashlib.sha512(plain).hexdigest()}
        obj.finishUpload(name, {"projectId": "p", "uploadId": upload_id, "hashes": hashes})
    return obj, name, resp


def test_gzip_upload_is_served_gzip_and_verifies_decoded(platform: Any) -> None:
    plain = b"line of log output\n" * 5000
    obj, name, resp = _upload(platform, gzip.compress(plain), encoding="gzip", plain=plain)
    assert resp.status_code == 200
    got, content_type = taskcluster.download.downloadToBuf(name=name, objectService=obj)
    assert bytes(got) == plain and content_type == "text/plain"
    url = obj.startDownload(name, {"acceptDownloadMethods": {"getUrl": True}})["url"]
    raw = requests.get(url, stream=True, timeout=30)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw.raw.read()) == plain


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_bad_gzip_or_unknown_encoding_is_refused(platform: Any, encoding: str) -> None:
    _, _, resp = _upload(platform, b"not gzip at all", encoding=encoding, plain=b"")
    assert resp.status_code == 400 and resp.json()["code"] == "InputError"
