"""Hawk header and bewit authentication through AuthService, signed by mohawk as the client does."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse

import mohawk
import pytest
import taskcluster

from tcworker.platform.auth.hawk import HawkRequest, split_bewit
from tcworker.platform.auth.service import AuthService, Client
from tcworker.platform.errors import AuthenticationFailed

URL = "http://127.0.0.1:8080/api/queue/v1/task/abc%2Fdef/status?x=1"
AUTH = AuthService(
    [Client("root", "root-token", ("*",)), Client("limited", "lim-token", ("queue:get-task:*",))], {}
)


def _request(
    method: str = "GET", content: bytes = b"", content_type: str = "", url: str = URL
) -> HawkRequest:
    parts = urllib.parse.urlsplit(url)
    resource = parts.path + ("?" + parts.query if parts.query else "")
    return HawkRequest(method, resource, parts.hostname or "", parts.port or 80, content, content_type)


def _header(
    client: str, token: str, method: str = "GET", content: bytes = b"", ctype: str = "", ext: str = "e30="
) -> str:
    creds = {"id": client, "key": token, "algorithm": "sha256"}
    return mohawk.Sender(creds, URL, method, content=content, content_type=ctype, ext=ext).request_header


def test_valid_header_gives_client_scopes_plus_anonymous() -> None:
    ident = AUTH.authenticate(header=_header("limited", "lim-token"), bewit=None, request=_request())
    assert ident.client_id == "limited"
    assert ident.satisfies("queue:get-task:x") and ident.satisfies("queue:status:x")  # anonymous role
    assert not ident.satisfies("queue:create-task:x")


def test_wrong_token_unknown_client_and_tampered_body_fail() -> None:
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header=_header("limited", "nope"), bewit=None, request=_request())
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header=_header("ghost", "x"), bewit=None, request=_request())
    header = _header("root", "root-token", "POST", b'{"a":1}', "application/json")
    with pytest.raises(AuthenticationFailed, match="payload"):
        AUTH.authenticate(header=header, bewit=None, request=_request("POST", b'{"a":2}', "application/json"))
    AUTH.authenticate(header=header, bewit=None, request=_request("POST", b'{"a":1}', "application/json"))


def test_mac_covers_the_raw_encoded_path() -> None:
    header = _header("root", "root-token")
    decoded = URL.replace("%2F", "/")
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header=header, bewit=None, request=_request(url=decoded))


def test_stale_timestamp_is_rejected() -> None:
    creds = {"id": "root", "key": "root-token", "algorithm": "sha256"}
    old = mohawk.Sender(creds, URL, "GET", content=b"", content_type="", _timestamp=int(time.time()) - 3600)
    with pytest.raises(AuthenticationFailed, match="Stale"):
        AUTH.authenticate(header=old.request_header, bewit=None, request=_request())


def test_authorized_scopes_restrict_and_must_be_held() -> None:
    ext = taskcluster.utils.makeB64UrlSafe(
        taskcluster.utils.encodeStringForB64Header(json.dumps({"authorizedScopes": ["queue:get-task:a"]}))
    ).decode()
    ident = AUTH.authenticate(header=_header("root", "root-token", ext=ext), bewit=None, request=_request())
    assert ident.satisfies("queue:get-task:a") and not ident.satisfies("queue:create-task:x")
    ext = taskcluster.utils.makeB64UrlSafe(
        taskcluster.utils.encodeStringForB64Header(json.dumps({"authorizedScopes": ["queue:create-task:x"]}))
    ).decode()
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header=_header("limited", "lim-token", ext=ext), bewit=None, request=_request())


def test_temporary_credentials_in_ext_and_issuer_must_hold_the_scopes() -> None:
    now = dt.datetime.now(dt.UTC)
    creds = taskcluster.createTemporaryCredentials(
        "root", "root-token", now, now + dt.timedelta(minutes=5), ["queue:x"], name="temp/1"
    )
    ext = taskcluster.utils.makeB64UrlSafe(
        taskcluster.utils.encodeStringForB64Header(
            json.dumps({"certificate": json.loads(creds["certificate"])}, separators=(",", ":"))
        )
    ).decode()
    ident = AUTH.authenticate(
        header=_header("temp/1", creds["accessToken"], ext=ext), bewit=None, request=_request()
    )
    assert ident.client_id == "temp/1" and ident.satisfies("queue:x") and not ident.satisfies("queue:y")
    bad = taskcluster.createTemporaryCredentials(
        "limited", "lim-token", now, now + dt.timedelta(minutes=5), ["*"]
    )
    ext = taskcluster.utils.makeB64UrlSafe(
        taskcluster.utils.encodeStringForB64Header(
            json.dumps({"certificate": json.loads(bad["certificate"])})
        )
    ).decode()
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(
            header=_header("limited", bad["accessToken"], ext=ext), bewit=None, request=_request()
        )


def test_bewit_from_the_official_client_validates_and_expires() -> None:
    queue = taskcluster.Queue(
        {"rootUrl": "http://127.0.0.1:8080", "credentials": {"clientId": "root", "accessToken": "root-token"}}
    )
    signed = queue.buildSignedUrl("getArtifact", "abc", 0, "private/x y", expiration=60)
    parts = urllib.parse.urlsplit(signed)
    bewit, stripped = split_bewit(parts.query)
    assert bewit is not None and stripped == ""
    req = _request(url=f"http://127.0.0.1:8080{parts.path}")
    assert AUTH.authenticate(header=None, bewit=bewit, request=req).client_id == "root"
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header=None, bewit=bewit, request=_request(url="http://127.0.0.1:8080/other"))
    with pytest.raises(AuthenticationFailed):
        AUTH.authenticate(header="Hawk x", bewit=bewit, request=req)


def test_split_bewit_keeps_other_query_parameters() -> None:
    assert split_bewit("bewit=X&a=b") == ("X", "a=b")
    assert split_bewit("a=b&bewit=X") == ("X", "a=b")
    assert split_bewit("a=b&bewit=X&c=d") == ("X", "a=b&c=d")
    assert split_bewit("a=b") == (None, "a=b")
