"""Assembles the platform's services over one database and names their routers.

Holds no request logic: it opens the store, loads static clients and roles, creates the queue's
issuer client and the object-URL signing key (both persisted, so credentials and URLs handed out
before a restart keep working), and builds each service's endpoint table.

Deviations from upstream v106 decided here (documented for the README):

* ``reportException`` also accepts reason ``superseded`` (validated against the official
  ``task-exception-request.json`` with that one enum value added): docker-worker-style superseding
  resolves the superseded runs that way, and ``task-status.json`` still lists it. It is not retried.
* ``createArtifact`` with ``storageType: s3`` answers 400 (use ``object``); see ``queue/artifacts.py``.
* ``claimTask`` validates its body against a reconstructed ``local/task-claim-request.json``
  (the official file is not in the shipped schema set).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tcworker.platform.api import Router
from tcworker.platform.auth import routes as auth_routes
from tcworker.platform.auth.service import (
    QUEUE_CLIENT_ID,
    ROOT_CLIENT_ID,
    AuthService,
    Client,
    load_clients_file,
)
from tcworker.platform.index import routes as index_routes
from tcworker.platform.index.service import IndexService
from tcworker.platform.objects import routes as object_routes
from tcworker.platform.objects.content import ContentStore
from tcworker.platform.objects.service import ObjectService
from tcworker.platform.objects.tokens import TokenSigner
from tcworker.platform.purgecache import routes as purge_routes
from tcworker.platform.purgecache.service import PurgeCacheService
from tcworker.platform.queue import routes as queue_routes
from tcworker.platform.queue.artifacts import ArtifactService
from tcworker.platform.queue.credentials import Issuer
from tcworker.platform.queue.listings import Listings
from tcworker.platform.queue.resolvers import Resolvers
from tcworker.platform.queue.service import QueueService
from tcworker.platform.queue.waiters import Waiters
from tcworker.platform.schemas import SchemaSet
from tcworker.platform.store.db import Database, ensure_meta


@dataclass(frozen=True)
class PlatformConfig:
    data_dir: Path
    root_access_token: str
    claim_timeout: float = 1200.0
    clients_file: Path | None = None


def _extend_exception_reasons(schema: dict) -> None:  # type: ignore[type-arg]
    """Deviation: the local queue also accepts ``superseded`` (docker-worker's superseding needs it;
    task-status.json lists it as a reasonResolved)."""
    reasons = schema["properties"]["reason"]["enum"]
    if "superseded" not in reasons:
        reasons.append("superseded")


def _secrets(conn: sqlite3.Connection) -> tuple[str, str]:
    issuer = ensure_meta(conn, "queue_issuer_token", lambda: secrets.token_urlsafe(33))
    signing = ensure_meta(conn, "object_url_key", lambda: secrets.token_urlsafe(33))
    return issuer, signing


class Services:
    """Everything behind the HTTP layer; ``open()`` before use, ``close()`` after."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.db = Database(config.data_dir / "platform.sqlite3")
        self.waiters = Waiters()
        self.schemas = SchemaSet()
        self.routers: dict[str, Router] = {}
        self.resolvers: Resolvers | None = None

    async def open(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        extra_clients, roles = load_clients_file(cfg.clients_file) if cfg.clients_file else ([], {})
        await self.db.open()
        issuer_token, signing_key = await self.db.run(_secrets)
        clients = [
            Client(ROOT_CLIENT_ID, cfg.root_access_token, ("*",)),
            Client(QUEUE_CLIENT_ID, issuer_token, ("*",)),
            *extra_clients,
        ]
        self.auth = AuthService(clients, roles)
        issuer = Issuer(QUEUE_CLIENT_ID, issuer_token)
        content = ContentStore(cfg.data_dir / "objects")
        await asyncio.to_thread(content.remove_partial_uploads)
        self.objects = ObjectService(self.db, content, TokenSigner(signing_key))
        self.queue = QueueService(self.db, self.waiters, issuer, cfg.claim_timeout)
        self.artifacts = ArtifactService(self.db, self.objects, issuer)
        self.index = IndexService(self.db)
        self.purge = PurgeCacheService(self.db)
        self.resolvers = Resolvers(self.queue, content)
        self.listings = Listings(self.db)
        self.routers = {
            "queue": Router(
                "queue", queue_routes.endpoints(self.queue, self.artifacts, self.objects, self.listings)
            ),
            "object": Router("object", object_routes.endpoints(self.objects)),
            "auth": Router("auth", auth_routes.endpoints(self.auth)),
            "index": Router("index", index_routes.endpoints(self.index)),
            "purge-cache": Router("purge-cache", purge_routes.endpoints(self.purge)),
        }
        self.schemas.add("queue/task-exception-request.json", _extend_exception_reasons)
        for router in self.routers.values():
            for ep in router.endpoints:
                if ep.input is not None and not self.schemas.has(ep.input):
                    self.schemas.add(ep.input)

    async def close(self) -> None:
        self.waiters.close()
        await self.db.close()
