"""Hawk signing with a run's *current* credentials and ``authorizedScopes`` (spec/worker.md §5.2).

The proxy never hands credentials to the task: it signs each forwarded request itself. The
credentials change after every reclaim, so they live in one mutable ``RequestSigner`` whose
``update`` swaps them atomically (a request signed just before the swap is still valid: the old
temporary credentials last until the old ``takenUntil``). The Hawk ``ext`` (certificate +
authorized scopes) comes from the official client's ``makeHawkExt`` and the MAC from ``mohawk``,
as the official client does; the payload hash is left out (optional in Hawk, and Taskcluster's
auth does not require it), which keeps signing independent of the body's size. As on the
platform (``tcworker.platform.auth.hawk``), the MAC is computed by ``mohawk.util.calculate_mac``
from the request's fields directly: ``mohawk.Sender`` / ``mohawk.base.Resource`` pretty-print
every request into a debug message, which cost ~0.4 ms per proxied call.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mohawk.base
import mohawk.bewit
import mohawk.exc
import mohawk.util
import taskcluster.aio

from tcworker.hawkmac import MacInput


@dataclass(frozen=True)
class ProxyCredentials:
    """clientId / accessToken / certificate; ``repr`` never shows the secret parts."""

    client_id: str
    access_token: str
    certificate: str = ""

    @classmethod
    def from_taskcluster(cls, creds: Mapping[str, Any]) -> ProxyCredentials:
        cert = creds.get("certificate") or ""
        if not isinstance(cert, str):
            cert = json.dumps(cert)
        return cls(str(creds.get("clientId", "")), str(creds.get("accessToken", "")), cert)

    def __repr__(self) -> str:
        return f"ProxyCredentials(client_id={self.client_id!r}, access_token=<redacted>)"

    @property
    def temporary_scopes(self) -> list[str] | None:
        """The certificate's scopes for temporary credentials, ``None`` for permanent ones."""
        if not self.certificate:
            return None
        try:
            scopes = json.loads(self.certificate).get("scopes")
        except (ValueError, AttributeError):
            return None
        return [str(s) for s in scopes] if isinstance(scopes, list) else None


class _Signing:
    """One immutable set of signing inputs, replaced as a whole on ``update``.

    Everything that depends only on the credentials is prepared here, once per swap rather than
    once per request: mohawk's header-value check of the id and of the long ``ext`` (a regular
    expression over the certificate and scopes, ~0.6 KB) and the header text around them.
    """

    def __init__(self, creds: ProxyCredentials, authorized_scopes: Sequence[str] | None) -> None:
        self.creds = creds
        options: dict[str, Any] = {
            "rootUrl": "http://unused.invalid",
            "credentials": {"clientId": creds.client_id, "accessToken": creds.access_token},
        }
        if creds.certificate:
            options["credentials"]["certificate"] = creds.certificate
        if authorized_scopes is not None:
            options["authorizedScopes"] = list(authorized_scopes)
        # The official client's ext (certificate + authorizedScopes, base64 JSON). The session
        # argument only avoids creating one; this client never sends anything.
        ext = taskcluster.aio.Auth(options, session=_NO_SESSION).makeHawkExt()
        self.ext: str = ext.decode() if isinstance(ext, bytes) else (ext if isinstance(ext, str) else "")
        self.hawk_credentials = {"id": creds.client_id, "key": creds.access_token, "algorithm": "sha256"}
        self.headers = _identity_headers(creds, authorized_scopes)
        # A value Hawk forbids (only possible from a task's own ``PUT /credentials``) fails each
        # signing, as mohawk would, not the swap.
        self.invalid: str | None = None
        self.header_start = self.header_end = ""
        try:
            self.header_start = f'Hawk id="{mohawk.util.prepare_header_val(creds.client_id)}", '
            self.header_end = f', ext="{mohawk.util.prepare_header_val(self.ext)}"' if self.ext else ""
        except mohawk.exc.BadHeaderValue as e:
            self.invalid = str(e)


def _url_parts(url: str) -> tuple[str, str, str]:
    """(host, port, path+query) of ``url`` as Hawk normalises them."""
    parts = urllib.parse.urlsplit(url)
    host, port = _host_port(parts.scheme, parts.netloc)
    name = parts.path or "/"
    if parts.query:
        name += "?" + parts.query
    return host, port, name


@functools.lru_cache(maxsize=64)
def _host_port(scheme: str, netloc: str) -> tuple[str, str]:
    """Host and port of an origin; cached, as a run's proxy talks to one or a few."""
    parts = urllib.parse.SplitResult(scheme, netloc, "", "", "")
    return parts.hostname or "", str(parts.port or (443 if scheme == "https" else 80))


class _NoSession:
    """Stands in for an aiohttp session in a client used only for ``makeHawkExt``."""


_NO_SESSION: Any = _NoSession()


def _identity_headers(creds: ProxyCredentials, authorized: Sequence[str] | None) -> dict[str, str]:
    from tcworker import __version__

    headers = {"X-Taskcluster-Proxy-Version": f"tcworker {__version__}", "X-Taskcluster-Proxy-Revision": ""}
    temp = creds.temporary_scopes
    if creds.certificate:
        headers["X-Taskcluster-Proxy-Temp-ClientId"] = creds.client_id
        if temp is not None:
            headers["X-Taskcluster-Proxy-Temp-Scopes"] = json.dumps(temp)
    else:
        headers["X-Taskcluster-Proxy-Perm-ClientId"] = creds.client_id
    if authorized is not None:
        headers["X-Taskcluster-Authorized-Scopes"] = json.dumps(list(authorized))
    return headers


class RequestSigner:
    """Signs requests and URLs with the newest credentials given to ``update``."""

    def __init__(self, creds: ProxyCredentials, authorized_scopes: Sequence[str] | None = None) -> None:
        self.authorized_scopes = list(authorized_scopes) if authorized_scopes is not None else None
        self._current = _Signing(creds, self.authorized_scopes)

    @property
    def credentials(self) -> ProxyCredentials:
        return self._current.creds

    def update(self, creds: ProxyCredentials) -> None:
        """Swap the credentials; requests signed from now on use them."""
        self._current = _Signing(creds, self.authorized_scopes)

    def identity_headers(self) -> dict[str, str]:
        """``X-Taskcluster-Proxy-*`` / ``X-Taskcluster-Authorized-Scopes`` for every response."""
        return dict(self._current.headers)

    def authorization(self, method: str, url: str) -> str:
        """A Hawk ``Authorization`` header for ``method url`` (no payload hash).

        The nonce (urlsafe base64) and the MAC (base64) cannot hold a character Hawk forbids in a
        header value, so only the parts from the credentials are checked (once, in ``_Signing``).
        """
        signing = self._current
        if signing.invalid is not None:
            raise mohawk.exc.BadHeaderValue(signing.invalid)
        host, port, name = _url_parts(url)
        resource = MacInput(
            credentials=signing.hawk_credentials,
            timestamp=str(mohawk.util.utc_now()),
            nonce=mohawk.util.random_string(6).decode("ascii"),
            method=method.upper(),
            name=name,
            host=host,
            port=port,
            ext=signing.ext or None,
        )
        mac = mohawk.util.calculate_mac("header", resource, None).decode("ascii")
        return (
            f'{signing.header_start}ts="{resource.timestamp}", nonce="{resource.nonce}", '
            f'mac="{mac}"{signing.header_end}'
        )

    def signed_url(self, url: str, ttl_seconds: float = 3600.0) -> str:
        """``url`` with a ``bewit`` query parameter valid ``ttl_seconds`` (what ``POST /bewit`` returns)."""
        signing = self._current
        expiration = int(time.time() + ttl_seconds)
        resource = mohawk.base.Resource(
            credentials=signing.hawk_credentials,
            method="GET",
            ext=signing.ext,
            url=url,
            timestamp=expiration,
            nonce="",
        )
        bewit = mohawk.bewit.get_bewit(resource).rstrip("=")
        parts = urllib.parse.urlsplit(url)
        query = f"{parts.query}&bewit={bewit}" if parts.query else f"bewit={bewit}"
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
