"""Who is calling, and with which scopes: static clients, roles and the validation steps of §4.6.

`AuthService.authenticate` turns a request into an :class:`Identity` (client id, expanded
scopes) or raises ``401``. It never imports aiohttp; ``api.py`` hands it a ``HawkRequest``.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tcworker.platform.auth import hawk, tempcreds
from tcworker.platform.auth.roles import RoleMap
from tcworker.platform.errors import AuthenticationFailed
from tcworker.scopes import scope_satisfied

ROOT_CLIENT_ID = "static/taskcluster/root"
QUEUE_CLIENT_ID = "static/taskcluster/queue"

DEFAULT_ANONYMOUS_SCOPES = (
    "queue:get-artifact:public/*",
    "queue:get-task:*",
    "queue:status:*",
    "queue:list-artifacts:*",
    "queue:list-task-group:*",
    "queue:list-dependent-tasks:*",
    "queue:pending-count:*",
    "purge-cache:purge-requests:*",
    "index:find-task:*",
)
_SCOPE = re.compile(r"^[\x20-\x7e]*$")
#: Verified (clientId, ext) pairs kept; the cache is emptied when it reaches this size.
GRANT_CACHE_SIZE = 4096


class ClientsFileError(ValueError):
    """The ``--clients`` YAML file is unusable; the message lists every problem."""


@dataclass(frozen=True)
class Client:
    client_id: str
    access_token: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Identity:
    """The authenticated caller: ``client_id`` is None for anonymous requests."""

    client_id: str | None
    scopes: tuple[str, ...]
    expires_ms: int | None = None
    unexpanded: tuple[str, ...] = field(default=())

    def satisfies(self, scope: str) -> bool:
        return scope_satisfied(self.scopes, scope)


@dataclass(frozen=True)
class Grant:
    """What a (clientId, ext) pair is entitled to once checked: the Hawk key and the identity.

    ``window`` is the temporary certificate's (start, expiry) in ms, the only part of the check
    that depends on the clock and therefore the only part repeated when the grant is reused.
    """

    key: str
    identity: Identity
    window: tuple[float, float] | None


def load_clients_file(path: Path) -> tuple[list[Client], dict[str, list[str]]]:
    """Parse ``clients: [{clientId, accessToken, scopes}]`` and ``roles: [{roleId, scopes}]``."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClientsFileError(f"{path}: cannot read: {exc}") from exc
    problems: list[str] = []
    clients: list[Client] = []
    roles: dict[str, list[str]] = {}
    if not isinstance(doc, dict):
        raise ClientsFileError(f"{path}: top level must be a mapping with `clients` and `roles`")
    for key in doc:
        if key not in ("clients", "roles"):
            problems.append(f"unknown key {key!r}")

    def scopes_of(entry: Mapping[str, Any], where: str) -> list[str]:
        scopes = entry.get("scopes", [])
        if not isinstance(scopes, list) or not all(
            isinstance(s, str) and _SCOPE.fullmatch(s) for s in scopes
        ):
            problems.append(f"{where}: scopes must be a list of printable-ASCII strings")
            return []
        if any(s.endswith("**") for s in scopes):
            problems.append(f"{where}: scopes may not end in **")
        return list(scopes)

    for i, entry in enumerate(doc.get("clients") or []):
        where = f"clients[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        cid, token = entry.get("clientId"), entry.get("accessToken")
        if not isinstance(cid, str) or not cid or not _SCOPE.fullmatch(cid):
            problems.append(f"{where}: clientId must be a non-empty printable string")
        if not isinstance(token, str) or not token:
            problems.append(f"{where}: accessToken must be a non-empty string")
        scopes = scopes_of(entry, where)
        if isinstance(cid, str) and isinstance(token, str):
            clients.append(Client(cid, token, tuple(scopes)))
    for i, entry in enumerate(doc.get("roles") or []):
        where = f"roles[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("roleId"), str):
            problems.append(f"{where}: must be a mapping with a string roleId")
            continue
        roles[entry["roleId"]] = scopes_of(entry, where)
    if problems:
        raise ClientsFileError(f"{path}: " + "; ".join(problems))
    return clients, roles


class AuthService:
    """Static clients and roles, plus request authentication."""

    def __init__(self, clients: Iterable[Client], roles: Mapping[str, Sequence[str]]) -> None:
        self.clients = {c.client_id: c for c in clients}
        merged = {"anonymous": list(DEFAULT_ANONYMOUS_SCOPES), **roles}
        self.roles = RoleMap(merged)
        self.anonymous = Identity(None, self.roles.expand(["assume:anonymous"]))
        # A client sends the same ext (certificate and all) on every call; decoding it costs more
        # than the MAC check, so decoded exts are kept (read-only: nothing here mutates them).
        self._decode_ext = functools.lru_cache(maxsize=256)(hawk.decode_ext)
        # ...and checking that ext (certificate signature, issuer scopes, authorizedScopes, role
        # expansion) gives the same key and identity every time: clients and roles never change
        # while the server runs. Only the MAC, timestamp and the certificate's validity window are
        # checked per request. A grant depends on the ext, never on the MAC, so caching it before
        # the MAC is verified gives a forger nothing: the MAC check that follows still fails.
        self._grants: dict[tuple[str, str], Grant] = {}

    def client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def expand(self, scopes: Iterable[str]) -> tuple[str, ...]:
        return self.roles.expand(scopes)

    def authenticate(self, *, header: str | None, bewit: str | None, request: hawk.HawkRequest) -> Identity:
        """Steps 1-6 of §4.6. No credentials at all → the anonymous identity."""
        if header is None and bewit is None:
            return self.anonymous
        if header is not None and bewit is not None:
            raise AuthenticationFailed("Cannot use both an Authorization header and a bewit")
        presented = (
            hawk.parse_header(header, self._decode_ext)
            if header is not None
            else hawk.parse_bewit(bewit or "")
        )
        grant = self._grant(presented)
        hawk.verify(presented, request, grant.key)
        return grant.identity

    def _grant(self, presented: hawk.Presented) -> Grant:
        """The cached grant of this (clientId, ext), its certificate window re-checked; or a new one."""
        cache_key = (presented.client_id, presented.raw_ext)
        grant = self._grants.get(cache_key)
        if grant is not None:
            if grant.window is not None:
                tempcreds.check_window(*grant.window, int(time.time() * 1000))
            return grant
        key, scopes, expires_ms, window = self._key_and_scopes(presented)
        unexpanded = tuple(scopes) + ("assume:anonymous",)
        identity = Identity(presented.client_id, self.roles.expand(unexpanded), expires_ms, unexpanded)
        grant = Grant(key, identity, window)
        if len(self._grants) >= GRANT_CACHE_SIZE:
            self._grants.clear()
        self._grants[cache_key] = grant
        return grant

    def _key_and_scopes(
        self, presented: hawk.Presented
    ) -> tuple[str, Sequence[str], int | None, tuple[float, float] | None]:
        ext = presented.ext
        cert = ext.get("certificate")
        issuer_id = presented.client_id
        if cert is not None:
            cert = tempcreds.check_shape(cert)
            if "issuer" in cert:
                issuer_id = cert["issuer"]
                if issuer_id == presented.client_id:
                    raise AuthenticationFailed("ext.certificate.issuer must differ from the clientId")
        issuer = self.clients.get(issuer_id)
        if issuer is None:
            raise AuthenticationFailed(f"Client `{issuer_id}` not found")
        issuer_scopes = self.roles.expand((*issuer.scopes, "assume:anonymous"))
        key, expires_ms, window = issuer.access_token, None, None
        scopes: Sequence[str] = issuer.scopes
        if cert is not None:
            now_ms = int(time.time() * 1000)
            if "issuer" in cert:
                if not scope_satisfied(issuer_scopes, f"auth:create-client:{presented.client_id}"):
                    raise AuthenticationFailed(
                        f"issuer `{issuer_id}` lacks auth:create-client:{presented.client_id}"
                    )
            elif "clientId" in cert:
                raise AuthenticationFailed("ext.certificate.clientId is not allowed")
            if not all(scope_satisfied(issuer_scopes, s) for s in cert["scopes"]):
                raise AuthenticationFailed("ext.certificate issuer lacks scopes it granted")
            check = tempcreds.verify(
                cert, client_id=presented.client_id, issuer_token=issuer.access_token, now_ms=now_ms
            )
            key, scopes, expires_ms = check.access_token, check.scopes, check.expiry_ms
            window = (cert["start"], cert["expiry"])
        authorized = ext.get("authorizedScopes")
        if authorized is not None:
            if not isinstance(authorized, list) or not all(tempcreds.is_scope(s) for s in authorized):
                raise AuthenticationFailed("ext.authorizedScopes must be an array of valid scopes")
            held = self.roles.expand((*scopes, "assume:anonymous"))
            if not all(scope_satisfied(held, s) for s in authorized):
                raise AuthenticationFailed("ext.authorizedScopes must be satisfied by the client's scopes")
            scopes = list(authorized)
        return key, scopes, expires_ms, window  # scopes: normalised (and cached) by RoleMap.expand
