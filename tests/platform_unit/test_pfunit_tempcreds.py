"""Temporary credentials: the official client's certificates validate; tampering and expiry do not."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import taskcluster

from tcworker.platform.auth import tempcreds
from tcworker.platform.errors import AuthenticationFailed

ISSUER, TOKEN = "static/issuer", "issuer-secret-token"


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("name", [None, "my-temp-client"])
def test_official_client_certificates_verify(name: str | None) -> None:
    now = dt.datetime.now(dt.UTC)
    creds = taskcluster.createTemporaryCredentials(
        ISSUER, TOKEN, now - dt.timedelta(minutes=1), now + dt.timedelta(hours=1), ["a:b", "c:*"], name=name
    )
    cert = tempcreds.check_shape(json.loads(creds["certificate"]))
    check = tempcreds.verify(cert, client_id=creds["clientId"], issuer_token=TOKEN, now_ms=_now_ms())
    assert check.scopes == ("a:b", "c:*")
    token = creds["accessToken"]
    assert check.access_token == (token.decode() if isinstance(token, bytes) else token)


def test_issued_named_credentials_match_the_client_algorithm() -> None:
    now = _now_ms()
    creds = tempcreds.issue(
        ISSUER, TOKEN, name="task-client/x", scopes=["s"], start_ms=now, expiry_ms=now + 60_000
    )
    cert = json.loads(creds["certificate"])
    assert cert["issuer"] == ISSUER and len(cert["seed"]) == 44
    check = tempcreds.verify(cert, client_id="task-client/x", issuer_token=TOKEN, now_ms=now)
    assert check.access_token == creds["accessToken"] and "=" not in creds["accessToken"]


def test_tampered_scopes_fail_the_signature() -> None:
    now = _now_ms()
    cert = json.loads(
        tempcreds.issue(ISSUER, TOKEN, name="n", scopes=["s"], start_ms=now, expiry_ms=now + 60_000)[
            "certificate"
        ]
    )
    cert["scopes"] = ["*"]
    with pytest.raises(AuthenticationFailed, match="signature"):
        tempcreds.verify(cert, client_id="n", issuer_token=TOKEN, now_ms=now)
    with pytest.raises(AuthenticationFailed):
        tempcreds.verify(json.loads(json.dumps(cert)), client_id="other", issuer_token=TOKEN, now_ms=now)


def test_expiry_allows_five_minutes_of_skew_then_fails() -> None:
    now = _now_ms()
    cert = json.loads(
        tempcreds.issue(ISSUER, TOKEN, name="n", scopes=[], start_ms=now - 120_000, expiry_ms=now - 60_000)[
            "certificate"
        ]
    )
    tempcreds.verify(cert, client_id="n", issuer_token=TOKEN, now_ms=now)  # within skew
    with pytest.raises(AuthenticationFailed, match="expired"):
        tempcreds.verify(cert, client_id="n", issuer_token=TOKEN, now_ms=now + 6 * 60_000)


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 2},
        {"seed": "short"},
        {"start": "x"},
        {"scopes": "a"},
        {"scopes": ["\n"]},
        {"signature": 1},
    ],
)
def test_malformed_certificates_are_rejected(bad: dict[str, object]) -> None:
    now = _now_ms()
    cert = json.loads(
        tempcreds.issue(ISSUER, TOKEN, name="n", scopes=[], start_ms=now, expiry_ms=now + 1000)["certificate"]
    )
    with pytest.raises(AuthenticationFailed):
        tempcreds.check_shape({**cert, **bad})
