"""The official client's lean Hawk sender (tcworker/tcapi/hawksender.py) signs exactly as mohawk."""

from __future__ import annotations

import json

import mohawk
import pytest
import taskcluster.aio
import taskcluster.aio.asyncclient
import taskcluster.client

from tcworker.tcapi import hawksender

CREDS = {"id": "worker/some-group/some-id", "key": "k" * 44, "algorithm": "sha256"}
EXT = taskcluster.aio.Queue(
    {
        "rootUrl": "http://127.0.0.1:1",
        "credentials": {
            "clientId": "task-client/x",
            "accessToken": "t" * 44,
            "certificate": json.dumps({"version": 1, "scopes": ["queue:*"], "seed": "s" * 44}),
        },
        "authorizedScopes": ["queue:create-artifact:abc/0"],
    }
).makeHawkExt()

CASES = [
    ("GET", "http://127.0.0.1:8080/api/queue/v1/task/abc/status", "", "", {}),
    (
        "POST",
        "http://localhost/api/queue/v1/claim-work/p%2Fw?x=1&y=2",
        '{"tasks": 1}',
        "application/json",
        EXT,
    ),
    (
        "PUT",
        "https://tc.example.com/api/object/v1/upload/t%2Fabc%2F0%2Fpublic%2Flogs%2Flive.log",
        "{}",
        "application/json",
        EXT,
    ),
    ("PUT", "http://127.0.0.1:9/api/x?a=%C3%A9", b"\x00\xffbytes", "Text/Plain; charset=UTF-8", EXT),
    ("POST", "http://Host.Example:443/api/queue/v1/x", '{"é": "ünicode"}', "application/json", None),
    ("DELETE", "http://127.0.0.1/api/purge-cache/v1/x", "", "", b"bytes-ext"),
]
OTHER_ALGORITHM = {"id": "worker/x", "key": "k" * 44, "algorithm": "sha1"}


@pytest.mark.parametrize(("method", "url", "content", "content_type", "ext"), CASES)
def test_header_is_byte_for_byte_mohawks(method: str, url: str, content: str, content_type: str, ext) -> None:
    kwargs = dict(
        credentials=CREDS, url=url, method=method, content=content, content_type=content_type, ext=ext
    )
    ours = hawksender.LeanSender(**kwargs, nonce="n0Nc3x", _timestamp="1796230000").request_header
    theirs = mohawk.Sender(**kwargs, nonce="n0Nc3x", _timestamp="1796230000").request_header
    assert ours == theirs


def test_other_algorithms_and_bodies_take_mohawks_own_path() -> None:
    for credentials, content in ((OTHER_ALGORITHM, '{"a": 1}'), (CREDS, None)):
        kwargs = dict(
            credentials=credentials,
            url=CASES[1][1],
            method="POST",
            content=content,
            content_type="application/json",
        )
        ours = hawksender.LeanSender(**kwargs, nonce="n0Nc3x", _timestamp="1796230000").request_header
        theirs = mohawk.Sender(**kwargs, nonce="n0Nc3x", _timestamp="1796230000").request_header
        assert ours == theirs


def test_nonces_differ_and_look_like_mohawks() -> None:
    nonces = {
        hawksender.LeanSender(CREDS, CASES[0][1], "GET").request_header.split('nonce="')[1][:6]
        for _ in range(2000)
    }
    assert len(nonces) == 2000
    assert all(
        len(n) == 6 and set(n) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for n in nonces
    )


@pytest.mark.parametrize(("method", "url", "content", "content_type", "ext"), CASES)
def test_mohawk_receiver_accepts_it(method: str, url: str, content: str, content_type: str, ext) -> None:
    header = hawksender.LeanSender(
        credentials=CREDS, url=url, method=method, content=content, content_type=content_type, ext=ext
    ).request_header
    mohawk.Receiver(
        lambda _id: CREDS, header, url, method, content=content, content_type=content_type
    )  # raises when the MAC, hash or timestamp is wrong
    bad = header.replace('mac="', 'mac="A')
    with pytest.raises(mohawk.exc.MacMismatch):
        mohawk.Receiver(lambda _id: CREDS, bad, url, method, content=content, content_type=content_type)


def test_install_swaps_only_the_clients_sender() -> None:
    hawksender.install()
    hawksender.install()  # idempotent
    assert taskcluster.aio.asyncclient.mohawk.Sender is hawksender.LeanSender
    assert taskcluster.aio.asyncclient.mohawk.bewit is mohawk.bewit
    assert (
        mohawk.Sender is not hawksender.LeanSender
    )  # mohawk itself (the platform's Receiver side) is untouched


def _client(**options: object) -> taskcluster.aio.Queue:
    return taskcluster.aio.Queue({"rootUrl": "http://127.0.0.1:1", **options})


CERT = json.dumps({"version": 1, "scopes": ["queue:*"], "seed": "s" * 44, "signature": "g" * 44})
EXT_CASES = [
    {"credentials": {"clientId": "c", "accessToken": "t" * 44}},
    {"credentials": {"clientId": "c", "accessToken": "t" * 44, "certificate": CERT}},
    {
        "credentials": {"clientId": "c", "accessToken": "t" * 44, "certificate": CERT},
        "authorizedScopes": ["a"],
    },
    {"credentials": {"clientId": "c", "accessToken": "t" * 44, "certificate": CERT}, "authorizedScopes": []},
    {"credentials": {"clientId": "c", "accessToken": "u" * 44}, "authorizedScopes": ["a", "b"]},
    {"credentials": {"clientId": "c", "accessToken": "t" * 44, "certificate": CERT.encode()}},
    {"credentials": {"clientId": "c", "accessToken": ""}},  # no credentials: {}
    {},
]


@pytest.mark.parametrize("options", EXT_CASES)
def test_remembered_hawk_ext_is_the_clients_own(options: dict) -> None:
    hawksender.install()
    original = taskcluster.client.BaseClient.makeHawkExt.original
    for _ in range(2):  # computed, then from the cache
        client = _client(**options)
        assert client.makeHawkExt() == original(client)


def test_ext_cache_follows_certificate_and_scopes_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    hawksender.install()
    monkeypatch.setattr(hawksender, "EXT_CACHE_SIZE", 3)
    monkeypatch.setattr(hawksender, "_ext_cache", {})
    exts = set()
    for i in range(10):
        cert = json.dumps({"version": 1, "seed": f"{i:044d}"})
        client = _client(
            credentials={"clientId": "c", "accessToken": "t" * 44, "certificate": cert},
            authorizedScopes=[f"s{i}"],
        )
        exts.add(client.makeHawkExt())
        assert len(hawksender._ext_cache) <= 3
    assert len(exts) == 10
    assert all("t" * 44 not in repr(key) for key in hawksender._ext_cache)  # the token is not kept
