"""Purge-cache semantics (spec §5): record purge requests, list those newer than ``since``."""

from __future__ import annotations

import sqlite3
from typing import Any

from tcworker.platform.clock import json_ms, now_ms
from tcworker.platform.store.db import Database


class PurgeCacheService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def purge(self, pool: str, cache_name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO purge_requests (worker_pool_id, cache_name, before_ms) VALUES (?,?,?)",
                (pool, cache_name, now_ms()),
            )

        await self.db.run(op)

    async def requests(self, pool: str, since_ms: int) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT * FROM purge_requests WHERE worker_pool_id = ? AND before_ms >= ? ORDER BY before_ms",
                (pool, since_ms),
            ).fetchall()

        prov, _, wt = pool.partition("/")
        rows = await self.db.read(op)
        return {
            "requests": [
                {
                    "provisionerId": prov,
                    "workerType": wt,
                    "cacheName": r["cache_name"],
                    "before": json_ms(r["before_ms"]),
                }
                for r in rows
            ]
        }
