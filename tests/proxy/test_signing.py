"""The proxy's Hawk header, whose credential-only parts are prepared once per credential swap:
still accepted by mohawk's own ``Receiver`` (temporary credentials with a certificate and
authorized scopes, queries, default and explicit ports, a swap between calls), and a client id
Hawk forbids still fails each signing (as mohawk does), not the swap."""

from __future__ import annotations

import base64
import json

import mohawk
import mohawk.exc
import pytest

from tcworker.proxy.signing import ProxyCredentials, RequestSigner

CERT = json.dumps(
    {
        "version": 1,
        "scopes": ["queue:get-task:*"],
        "start": 1,
        "expiry": 2,
        "seed": "s" * 44,
        "signature": "x" * 44,
    }
)
KEYS = {"task-client/abc/0": "first-secret-key", "second": "second-secret-key"}


def receive(header: str, url: str, method: str) -> mohawk.Receiver:
    return mohawk.Receiver(
        lambda i: {"id": i, "key": KEYS[i], "algorithm": "sha256"},
        header,
        url,
        method,
        accept_untrusted_content=True,
        seen_nonce=lambda *a: False,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4567/api/queue/v1/task/abc",
        "https://community-tc.services.mozilla.com/api/queue/v1/task/abc?continuationToken=x%2Fy&limit=2",
        "http://taskcluster/api/queue/v1/task/abc",
        "http://[::1]:8080/api/auth/v1/clients/?prefix=a",
    ],
)
def test_header_verifies_with_mohawk(url: str) -> None:
    signer = RequestSigner(
        ProxyCredentials("task-client/abc/0", KEYS["task-client/abc/0"], CERT), ["queue:get-task:abc"]
    )
    for method in ("GET", "post"):
        receiver = receive(signer.authorization(method, url), url, method.upper())
        ext = json.loads(base64.b64decode(receiver.parsed_header["ext"]))
        assert ext == {"certificate": json.loads(CERT), "authorizedScopes": ["queue:get-task:abc"]}
    signer.update(ProxyCredentials("second", KEYS["second"]))  # a reclaim's swap
    header = signer.authorization("GET", url)
    assert receive(header, url, "GET").parsed_header["id"] == "second"


def test_forbidden_client_id_fails_each_signing_not_the_swap() -> None:
    signer = RequestSigner(ProxyCredentials("second", KEYS["second"]))
    signer.update(ProxyCredentials('bad"id', "key"))  # e.g. a task's own PUT /credentials
    for _ in range(2):
        with pytest.raises(mohawk.exc.BadHeaderValue):
            signer.authorization("GET", "http://127.0.0.1:1/api/queue/v1/task/abc")
    signer.update(ProxyCredentials("second", KEYS["second"]))
    url = "http://127.0.0.1:1/api/queue/v1/task/abc"
    assert receive(signer.authorization("GET", url), url, "GET").parsed_header["id"] == "second"
