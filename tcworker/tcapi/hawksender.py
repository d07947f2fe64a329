"""A lean stand-in for ``mohawk.Sender`` inside the official client: the same Hawk header, less work.

The official ``taskcluster.aio`` client signs every call with ``mohawk.Sender(...).request_header``.
Building a ``Sender`` parses the URL through ``mohawk.base.Resource``, validates and formats the
header field by field and eagerly ``str.format``s two debug messages nobody reads — about 90 µs of
CPU per call here, ~9 calls per trivial task (issue 15's profile). ``LeanSender`` takes exactly the
arguments the client passes and computes the header with mohawk's own primitives
(``calculate_payload_hash``, ``calculate_mac``, ``random_string``, ``utc_now``) from a
``MacInput`` (as the platform and the taskcluster-proxy already do), so the header is
byte-for-byte what ``mohawk.Sender`` would produce for the same nonce and timestamp (a test checks
that, and that ``mohawk.Receiver`` accepts it). ``install()`` swaps it into the client module only;
everything else in mohawk, and bewit signing, is untouched.

For ``sha256`` credentials (all Taskcluster issues) and a ``str``/``bytes`` body, the payload hash
and the MAC come from ``tcworker.hawkmac`` instead, the functions the platform verifies with:
mohawk's ``calculate_payload_hash`` ``pprint``s the body into a debug message on every call and
``calculate_mac`` ``str.format``s another, ~60 µs per header in all; there the keyed HMAC object
is kept per key (``tcworker.macs``: a run signs its ~9 calls with one key), and the nonce's random
bytes come from a block read once (``os.urandom`` lets go of the GIL, which the worker's threads
then take: the event loop waits to get it back). ~10 µs per header; the same bytes (tests compare).
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from types import SimpleNamespace
from typing import Any

import mohawk.util
from mohawk.base import EmptyValue

from tcworker import macs
from tcworker.hawkmac import MacInput, header_mac, payload_hash

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class LeanSender:
    """``request_header`` for one request, as ``mohawk.Sender(credentials, url, method, content,
    content_type, ext=...)`` computes it (payload hash always included, as the client asks)."""

    def __init__(
        self,
        credentials: dict[str, Any],
        url: str,
        method: str,
        content: Any = EmptyValue,
        content_type: Any = EmptyValue,
        ext: Any = None,
        nonce: str | None = None,
        _timestamp: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        name = parts.path or "/"
        if parts.query:
            name += "?" + parts.query
        port = str(parts.port) if parts.port else _DEFAULT_PORTS.get(parts.scheme, "")
        ext_text = _text(ext) if ext else None
        nonce = nonce or base64.urlsafe_b64encode(macs.random_bytes(6))[:6].decode()
        timestamp = _timestamp or str(int(time.time()))
        fast = (
            credentials["algorithm"] == "sha256"
            and (content is EmptyValue or isinstance(content, (str, bytes)))
            and (content_type is EmptyValue or isinstance(content_type, str))
        )
        content_hash = None
        if content is not EmptyValue and content_type is not EmptyValue:
            if fast:
                media_type = content_type.split(";")[0].strip().lower() if content_type else ""
                body = content.encode() if isinstance(content, str) else content
                content_hash = payload_hash(media_type, body or b"")
            else:
                content_hash = _text(
                    mohawk.util.calculate_payload_hash(content, credentials["algorithm"], content_type)
                )
        if fast:
            attrs = {"ts": timestamp, "nonce": nonce, "hash": content_hash or "", "ext": ext_text or ""}
            mac = header_mac(credentials["key"], attrs, method.upper(), name, parts.hostname or "", port).decode()
        else:
            mac_input = MacInput(
                credentials=credentials,
                timestamp=timestamp,
                nonce=nonce,
                method=method.upper(),
                name=name,
                host=parts.hostname or "",
                port=port,
                ext=ext_text,
            )
            mac = _text(mohawk.util.calculate_mac("header", mac_input, content_hash))
        header = f'Hawk mac="{mac}"'
        if content_hash:
            header += f', hash="{content_hash}"'
        header += (
            f', id="{mohawk.util.prepare_header_val(credentials["id"])}", ts="{timestamp}", nonce="{nonce}"'
        )
        if ext_text:
            header += f', ext="{mohawk.util.prepare_header_val(ext_text)}"'
        self.request_header = header


#: Hawk ``ext`` strings kept, by certificate and authorized scopes (emptied when full).
EXT_CACHE_SIZE = 1024
_ext_cache: dict[tuple[Any, ...], str | bytes] = {}


def _ext_key(options: dict[str, Any]) -> tuple[Any, ...] | None:
    """What ``makeHawkExt`` reads, as a hashable key; ``None`` when it cannot be one. The access
    token itself only has to be non-empty: the ``ext`` carries the certificate (sent in the clear
    in every header anyway), never the token, and neither does the key."""
    credentials = options.get("credentials") or {}
    certificate = credentials.get("certificate")
    if not isinstance(certificate, (str, bytes, type(None))):
        return None
    scopes = options.get("authorizedScopes", None)
    try:
        scopes_key = None if "authorizedScopes" not in options else tuple(scopes)
        key = (bool(credentials.get("clientId") and credentials.get("accessToken")), certificate, scopes_key)
        hash(key)
    except TypeError:
        return None
    return key


def _cached_hawk_ext(make: Any) -> Any:
    """``BaseClient.makeHawkExt`` computed once per certificate and scopes: it parses the
    certificate's JSON, re-serialises it with the scopes and base64-encodes the result on every
    call (~15 µs; nine calls per trivial task with one run's credentials)."""

    def make_hawk_ext(self: Any) -> Any:
        key = _ext_key(self.options)
        if key is None:
            return make(self)
        ext = _ext_cache.get(key)
        if ext is None:
            ext = make(self)
            if not isinstance(ext, (str, bytes)):  # no credentials: ``{}``, never shared
                return ext
            if len(_ext_cache) >= EXT_CACHE_SIZE:
                _ext_cache.clear()
            _ext_cache[key] = ext
        return ext

    make_hawk_ext.original = make  # type: ignore[attr-defined]
    return make_hawk_ext


def install() -> None:
    """Idempotent: the official aio client's ``mohawk`` becomes a namespace whose ``Sender`` is
    ``LeanSender`` (its ``mohawk.bewit`` is still mohawk's), and the clients' ``makeHawkExt`` is
    remembered per certificate and authorized scopes."""
    import taskcluster.aio.asyncclient as client_module
    import taskcluster.client

    base = taskcluster.client.BaseClient
    if not hasattr(base.makeHawkExt, "original"):
        base.makeHawkExt = _cached_hawk_ext(base.makeHawkExt)  # type: ignore[method-assign]
    current = client_module.mohawk
    if getattr(current, "Sender", None) is LeanSender:
        return
    client_module.mohawk = SimpleNamespace(Sender=LeanSender, bewit=current.bewit, base=current.base)  # type: ignore[attr-defined]
