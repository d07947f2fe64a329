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


@pytest.mark.parametrize(
    "attrs",
    [
        {"ts": "1700000000", "nonce": "abc", "mac": ""},
        {"ts": "1700000000", "nonce": "n0", "hash": "h+/=", "ext": "eyJhIjoxfQ==", "mac": ""},
        {"ts": "1", "nonce": "x", "ext": "e30=", "app": "some-app", "dlg": "d", "mac": ""},
        {"ts": "1", "nonce": "x", "app": "some-app", "mac": ""},
    ],
)
def test_header_mac_is_what_mohawk_computes(attrs: dict[str, str]) -> None:
    """The platform signs the normalized string itself (one hmac.digest); mohawk is the reference."""
    from mohawk.util import calculate_mac

    from tcworker.hawkmac import MacInput
    from tcworker.platform.auth.hawk import header_mac

    for method, resource, host, port in (
        ("GET", "/api/queue/v1/task/abc%2Fdef/status?x=1", "127.0.0.1", "8080"),
        ("POST", "/api/queue/v1/claim-work/p%2Fw", "localhost", "443"),
        ("PUT", "/api/queue/v1/task/\u00e9t\u00e9", "example.com", "80"),
    ):
        reference = calculate_mac(
            "header",
            MacInput(
                credentials={"id": "c", "key": "k3y-token", "algorithm": "sha256"},
                timestamp=attrs["ts"],
                nonce=attrs["nonce"],
                method=method,
                name=resource,
                host=host,
                port=port,
                ext=attrs.get("ext"),
                app=attrs.get("app"),
                dlg=attrs.get("dlg"),
            ),
            attrs.get("hash"),
        )
        assert header_mac("k3y-token", attrs, method, resource, host, port) == reference


def _temp_header(creds: dict[str, str], request: HawkRequest) -> str:
    ext = taskcluster.utils.makeB64UrlSafe(
        taskcluster.utils.encodeStringForB64Header(
            json.dumps({"certificate": json.loads(creds["certificate"])})
        )
    ).decode()
    token = creds["accessToken"]
    key = {
        "id": creds["clientId"],
        "key": token.decode() if isinstance(token, bytes) else token,
        "algorithm": "sha256",
    }
    url = f"http://{request.host}:{request.port}{request.resource}"
    return mohawk.Sender(key, url, request.method, content=b"", content_type="", ext=ext).request_header


def test_a_reused_certificate_is_still_checked_against_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grant of a (clientId, ext) is cached; its certificate's expiry is re-checked on every use."""
    auth = AuthService([Client("issuer", "issuer-token", ("queue:*", "auth:create-client:*"))], {})
    now = dt.datetime.now(dt.UTC)
    creds = taskcluster.createTemporaryCredentials(
        "issuer",
        "issuer-token",
        now - dt.timedelta(minutes=1),
        now + dt.timedelta(minutes=10),
        ["queue:get-task:*"],
        name="temp/one",
    )
    first = auth.authenticate(header=_temp_header(creds, _request()), bewit=None, request=_request())
    again = auth.authenticate(header=_temp_header(creds, _request()), bewit=None, request=_request())
    assert again is first and first.client_id == "temp/one" and first.satisfies("queue:get-task:x")
    assert not first.satisfies("queue:create-task:x")
    later = time.time() + 20 * 60  # past expiry + 5 min skew; the Hawk timestamp is fresh again
    monkeypatch.setattr("tcworker.platform.auth.service.time.time", lambda: later)
    monkeypatch.setattr("tcworker.platform.auth.hawk.time.time", lambda: later)
    header = mohawk.Sender(
        {"id": "temp/one", "key": creds["accessToken"], "algorithm": "sha256"},
        URL,
        "GET",
        content=b"",
        content_type="",
        ext=_temp_header(creds, _request()).split('ext="')[1].split('"')[0],
        _timestamp=int(later),
    ).request_header
    with pytest.raises(AuthenticationFailed, match="expired"):
        auth.authenticate(header=header, bewit=None, request=_request())
    with pytest.raises(AuthenticationFailed, match="Bad mac"):  # a cached grant never skips the MAC
        monkeypatch.undo()
        bad = _temp_header(creds, _request()).replace('mac="', 'mac="AAAA')
        auth.authenticate(header=bad, bewit=None, request=_request())


@pytest.mark.parametrize(
    "header",
    [
        # As mohawk's Sender writes it: the one-regex fast path.
        _header("limited", "lim-token"),
        _header("limited", "lim-token", "POST", b"{}", "application/json", ext=""),
        'Hawk mac="m", id="i", ts="1", nonce="n"',
        'Hawk mac="", hash="", id="", ts="1", nonce="", ext=""',
        # Other orders, spacing, app/dlg, schemes: the general attribute loop.
        'Hawk id="i", ts="1", nonce="n", mac="m", ext="e"',
        'hawk mac="m", id="i", ts="1", nonce="n"',
        'Hawk mac="m",id="i",ts="1",nonce="n"',
        'Hawk mac="m", id="i", ts="1", nonce="n", ext="e", app="a", dlg="d"',
    ],
)
def test_header_fast_path_parses_as_the_general_grammar(header: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path for mohawk's own header layout gives exactly what the attribute loop gives."""
    import re

    from tcworker.platform.auth import hawk

    fast = hawk._parse_attributes(header)
    monkeypatch.setattr(hawk, "_MOHAWK_FORM", re.compile(r"(?!)"))  # never matches: general path only
    assert fast == hawk._parse_attributes(header)


@pytest.mark.parametrize(
    "header",
    [
        'Hawk mac="m", id="i", ts="1", nonce="n", id="again"',
        'Hawk mac="m", id="i", ts="1", nonce="n" trailing',
        'Hawk mac="m\\"x", id="i", ts="1", nonce="n"',
        'Basic mac="m", id="i", ts="1", nonce="n"',
    ],
)
def test_headers_outside_the_fast_path_are_still_refused(header: str) -> None:
    from tcworker.platform.auth import hawk

    with pytest.raises(AuthenticationFailed):
        hawk._parse_attributes(header)
