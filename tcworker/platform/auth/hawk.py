"""Hawk request authentication (header scheme and bewit), using ``mohawk`` like the client does.

Only the wire format lives here: parse the header or bewit, decode ``ext``, verify MAC, payload
hash and timestamp with a key chosen by the caller (``service.py`` picks permanent or derived
keys). Everything is checked against the raw, still-percent-encoded path (spec §4.2).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import mohawk.base
import mohawk.util

from tcworker.hawkmac import header_mac, payload_hash
from tcworker.platform import jsonwire
from tcworker.platform.errors import AuthenticationFailed

SKEW_SECONDS = 15 * 60
_BEWIT_QUERY = re.compile(r"(^|&)bewit=([^&]*)")
_B64URL = re.compile(r"^[\w-]*=*$")
_HEADER_ATTR = mohawk.util.HAWK_HEADER_RE
_HEADER_KEYS = frozenset(mohawk.util.allowable_header_keys)
_VALUE = r'"([^"\\]*)"'  # mohawk's value grammar: no quote, no backslash
#: The header exactly as mohawk's Sender (so the official clients) writes it: one regex match
#: instead of the general attribute loop. Anything else takes the general path below.
_MOHAWK_FORM = re.compile(
    rf"Hawk mac={_VALUE}(?:, hash={_VALUE})?, id={_VALUE}, ts={_VALUE}, nonce={_VALUE}(?:, ext={_VALUE})?"
)


class HawkRequest(NamedTuple):
    """What a request looks like to Hawk: method, the raw resource, host, port, body.

    A NamedTuple, like ``Presented``: one of each is made per request, and a frozen dataclass's
    ``__init__`` (an ``object.__setattr__`` per field) cost several times as much.
    """

    method: str
    resource: str  # raw path + "?" + raw query, exactly as sent
    host: str
    port: int
    content: bytes
    content_type: str


class Presented(NamedTuple):
    """Identity claimed by a request before verification: the client id and its decoded ext."""

    client_id: str
    ext: dict[str, Any]
    raw_ext: str
    bewit: tuple[str, str] | None = None  # (expiration, mac) for bewit requests
    header: str | None = None
    attrs: dict[str, str] | None = None  # parsed header attributes


def decode_ext(raw: str | None) -> dict[str, Any]:
    """Base64 (either alphabet, padding optional) of a JSON object; '' means {}."""
    if not raw:
        return {}
    try:
        text = raw.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
        decoded = base64.b64decode(text, validate=True)
        # orjson when it gives what json.loads gives (jsonwire.loads_exact): temporary
        # credentials bring a new ext with every claim, and the standard parser took a quarter
        # of such a request's authentication.
        value = jsonwire.loads_exact(decoded)
        if value is jsonwire.UNDECIDED:
            value = json.loads(decoded)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise AuthenticationFailed("Failed to parse ext") from exc
    if not isinstance(value, dict):
        raise AuthenticationFailed("Failed to parse ext")
    return value


def _parse_attributes(header: str) -> dict[str, str]:
    """Hawk header attributes, with mohawk's grammar (``mohawk.util.HAWK_HEADER_RE``) and rules.

    Not ``mohawk.util.parse_authorization_header`` itself: it pretty-prints every header into a
    debug message whether or not debug logging is on, which costs more than the whole MAC check.
    """
    if len(header) > mohawk.util.MAX_LENGTH:
        raise AuthenticationFailed("Hawk header too long")
    common = _MOHAWK_FORM.fullmatch(header)
    if common is not None:
        mac, payload, client_id, ts, nonce, ext = common.groups()
        attrs = {"mac": mac, "id": client_id, "ts": ts, "nonce": nonce}
        if payload is not None:
            attrs["hash"] = payload
        if ext is not None:
            attrs["ext"] = ext
        return attrs
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "hawk":
        raise AuthenticationFailed("Authorization header must use the Hawk scheme")
    attrs: dict[str, str] = {}
    end = 0
    # Every character must belong to an attribute or be whitespace between them.
    for match in _HEADER_ATTR.finditer(rest):
        if rest[end : match.start()].strip():
            raise AuthenticationFailed("Bad Hawk Authorization header: cannot parse it")
        end = match.end()
        key, value = match.groups()
        if key not in _HEADER_KEYS or key in attrs:
            raise AuthenticationFailed(f"Bad Hawk Authorization header: unknown or repeated key {key!r}")
        attrs[key] = value
    if rest[end:].strip():
        raise AuthenticationFailed("Bad Hawk Authorization header: cannot parse it")
    return attrs


def parse_header(header: str, decode: Callable[[str | None], dict[str, Any]] = decode_ext) -> Presented:
    """``decode`` may be a caching ``decode_ext`` (``AuthService`` passes one); its results are
    then shared between requests and must be treated as read-only."""
    attrs = _parse_attributes(header)
    for key in ("id", "ts", "nonce", "mac"):
        if key not in attrs:
            raise AuthenticationFailed(f"Bad Hawk Authorization header: missing {key}")
    if not attrs["ts"].isdigit():
        raise AuthenticationFailed("Bad Hawk Authorization header: ts must be an integer")
    raw_ext = attrs.get("ext", "")
    return Presented(client_id=attrs["id"], ext=decode(raw_ext), raw_ext=raw_ext, header=header, attrs=attrs)


def split_bewit(query: str) -> tuple[str | None, str]:
    """(bewit token or None, query without the bewit parameter) — as Hawk strips it."""
    match = _BEWIT_QUERY.search(query)
    if match is None:
        return None, query
    start, end = match.span()
    if match.group(1) == "&":
        stripped = query[:start] + query[end:]
    else:
        stripped = query[end + 1 :] if end < len(query) and query[end] == "&" else query[end:]
    return match.group(2), stripped


def parse_bewit(token: str) -> Presented:
    if not _B64URL.fullmatch(token):
        raise AuthenticationFailed("Invalid bewit encoding")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise AuthenticationFailed("Invalid bewit encoding") from exc
    parts = text.split("\\")
    if len(parts) != 4 or not parts[0] or not parts[1].isdigit():
        raise AuthenticationFailed("Invalid bewit structure")
    client_id, exp, mac, raw_ext = parts
    return Presented(client_id=client_id, ext=decode_ext(raw_ext), raw_ext=raw_ext, bewit=(exp, mac))


def _url(req: HawkRequest, resource: str) -> str:
    return f"http://{req.host}:{req.port}{resource}"


def verify(presented: Presented, req: HawkRequest, key: str, *, now: Callable[[], float] = time.time) -> None:
    """Check MAC (+ payload hash, timestamp) or bewit MAC (+ expiry); raise 401 on mismatch."""
    credentials = {"id": presented.client_id, "key": key, "algorithm": "sha256"}
    if presented.bewit is None:
        attrs = presented.attrs
        assert attrs is not None
        if abs(int(attrs["ts"]) - now()) > SKEW_SECONDS:
            raise AuthenticationFailed("Stale timestamp")
        if "hash" in attrs and not hmac.compare_digest(
            attrs["hash"].encode(), payload_hash(req.content_type, req.content).encode()
        ):
            raise AuthenticationFailed("Bad payload hash")
        expected = header_mac(key, attrs, req.method.upper(), req.resource, req.host.lower(), str(req.port))
        if not hmac.compare_digest(expected, attrs["mac"].encode()):
            raise AuthenticationFailed("Bad mac")
        return
    exp, mac = presented.bewit
    if req.method not in ("GET", "HEAD"):
        raise AuthenticationFailed("bewit is only allowed for GET requests")
    resource = mohawk.base.Resource(
        url=_url(req, req.resource),
        method="GET",
        credentials=credentials,
        timestamp=exp,
        nonce="",
        ext=presented.raw_ext or None,
    )
    expected = mohawk.util.calculate_mac("bewit", resource, None)
    if isinstance(expected, bytes):
        expected = expected.decode("ascii")
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise AuthenticationFailed("Bad mac")
    if int(exp) <= now():
        raise AuthenticationFailed("Access expired")
