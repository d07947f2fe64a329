"""Temporary credentials: issuing and validating certificates exactly as Taskcluster does (§4.5/§4.6).

The queue issues *named* temporary credentials for task runs and artifact up/downloads; any client
may present credentials made by ``taskcluster.createTemporaryCredentials``. Validation follows the
auth service step by step, with its 5-minute skew allowance.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcworker import macs
from tcworker.platform import jsonwire
from tcworker.platform.errors import AuthenticationFailed

SKEW_MS = 5 * 60 * 1000
MAX_LIFETIME_MS = 31 * 24 * 3600 * 1000


def is_scope(value: object) -> bool:
    """A string of printable ASCII (``^[\\x20-\\x7e]*$``), without a regex: checked for each scope of
    every new certificate, where the regex cost more than the signature check."""
    return isinstance(value, str) and value.isascii() and value.isprintable()


def _signed_string(cert: dict[str, Any], name: str | None) -> bytes:
    lines = [f"version:{cert['version']}"]
    if name is not None:
        lines += [f"clientId:{name}", f"issuer:{cert['issuer']}"]
    lines += [f"seed:{cert['seed']}", f"start:{cert['start']}", f"expiry:{cert['expiry']}", "scopes:"]
    lines += list(cert["scopes"])
    return "\n".join(lines).encode()


def derive_access_token(issuer_token: str, seed: str) -> str:
    """URL-safe base64 without padding of HMAC-SHA256(issuer token, seed)."""
    digest = macs.hmac_sha256(issuer_token.encode(), seed.encode())
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(
    issuer_id: str,
    issuer_token: str,
    *,
    name: str,
    scopes: Sequence[str],
    start_ms: int,
    expiry_ms: int,
) -> dict[str, str]:
    """Named temporary credentials ``{"clientId", "accessToken", "certificate"}``."""
    cert: dict[str, Any] = {
        "version": 1,
        "scopes": list(scopes),
        "start": int(start_ms),
        "expiry": int(expiry_ms),
        # 44 random URL-safe characters, as upstream's two slugids are (any 44-character string
        # is a valid seed): 33 random bytes in URL-safe base64, what secrets.token_urlsafe(33)
        # gives, taken from a block read once per ~120 claims (macs.random_bytes: os.urandom
        # releases the GIL on every call).
        "seed": base64.urlsafe_b64encode(macs.random_bytes(33)).decode(),
        "issuer": issuer_id,
    }
    mac = macs.hmac_sha256(issuer_token.encode(), _signed_string(cert, name))
    cert["signature"] = base64.b64encode(mac).decode()
    return {
        "clientId": name,
        "accessToken": derive_access_token(issuer_token, cert["seed"]),
        "certificate": jsonwire.dumps_text(cert),
    }


@dataclass(frozen=True)
class CertificateCheck:
    """What a valid certificate grants: the Hawk key, the scopes and when it stops working."""

    access_token: str
    scopes: tuple[str, ...]
    expiry_ms: int


def _fail(why: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"ext.certificate is invalid: {why}")


def check_shape(cert: Any) -> dict[str, Any]:
    """Structural checks of step 3 (types, version, seed); raises 401 on any problem."""
    if not isinstance(cert, dict):
        raise _fail("not an object")
    if cert.get("version") != 1:
        raise _fail("version must be 1")
    seed = cert.get("seed")
    if not isinstance(seed, str) or len(seed) != 44:
        raise _fail("seed must be a 44-character string")
    for key in ("start", "expiry"):
        value = cert.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(f"{key} must be a number")
    scopes = cert.get("scopes")
    if not isinstance(scopes, list) or not all(is_scope(s) for s in scopes):
        raise _fail("scopes must be an array of valid scopes")
    if not isinstance(cert.get("signature"), str):
        raise _fail("signature must be a string")
    if "issuer" in cert and not isinstance(cert["issuer"], str):
        raise _fail("issuer must be a string")
    return cert


def check_window(start: float, expiry: float, now_ms: int) -> None:
    """The certificate's validity window against the clock, with the 5-minute skew allowance.

    A separate step because it is the only part of a certificate check that changes with time:
    the auth service re-runs just this for a certificate it has already verified once.
    """
    if start > now_ms + SKEW_MS:
        raise _fail("start is in the future")
    if expiry < now_ms - SKEW_MS:
        raise AuthenticationFailed("temporary credentials have expired")


def verify(cert: dict[str, Any], *, client_id: str, issuer_token: str, now_ms: int) -> CertificateCheck:
    """Times, lifetime and signature (scope checks against the issuer are the caller's job)."""
    start, expiry = cert["start"], cert["expiry"]
    check_window(start, expiry, now_ms)
    if expiry - start > MAX_LIFETIME_MS:
        raise _fail("credentials cannot last longer than 31 days")
    name = client_id if "issuer" in cert else None
    try:
        signed = _signed_string(cert, name)
    except (KeyError, TypeError) as exc:
        raise _fail("cannot rebuild the signed string") from exc
    expected = base64.b64encode(macs.hmac_sha256(issuer_token.encode(), signed)).decode()
    if not hmac.compare_digest(expected.encode(), str(cert["signature"]).encode()):
        raise _fail("signature does not match")
    return CertificateCheck(
        access_token=derive_access_token(issuer_token, cert["seed"]),
        scopes=tuple(cert["scopes"]),
        expiry_ms=int(expiry),
    )
