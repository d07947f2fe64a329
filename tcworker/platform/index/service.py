"""Index semantics (spec §5): findTask, insertTask, and indexing tasks by their ``index.*`` routes.

When a task completes, every route ``index.<namespace>`` inserts ``{taskId, rank 0, data {},
expires: task.expires}`` (the real index does this on the task-completed Pulse message; the
docker engine's indexed images depend on it). A higher-or-equal rank replaces an entry.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tcworker.platform.clock import json_ms, now_ms, parse_ms
from tcworker.platform.errors import InputError, ResourceNotFound
from tcworker.platform.store.db import Database


def upsert(
    conn: sqlite3.Connection, namespace: str, task_id: str, rank: float, data: dict[str, Any], expires_ms: int
) -> None:
    row = conn.execute("SELECT rank FROM index_entries WHERE namespace = ?", (namespace,)).fetchone()
    if row is not None and row[0] > rank:
        return
    conn.execute(
        "INSERT OR REPLACE INTO index_entries (namespace, task_id, rank, data, expires_ms) VALUES (?,?,?,?,?)",
        (namespace, task_id, rank, json.dumps(data), expires_ms),
    )


def index_routes(conn: sqlite3.Connection, task_id: str, routes: list[str], expires_ms: int) -> None:
    """Called in the transaction that completes a task."""
    for route in routes:
        if route.startswith("index.") and len(route) > len("index."):
            upsert(conn, route[len("index.") :], task_id, 0, {}, expires_ms)


def _entry(row: sqlite3.Row) -> dict[str, Any]:
    rank = row["rank"]
    return {
        "namespace": row["namespace"],
        "taskId": row["task_id"],
        "rank": int(rank) if float(rank).is_integer() else rank,
        "data": json.loads(row["data"]),
        "expires": json_ms(row["expires_ms"]),
    }


class IndexService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, path: str) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM index_entries WHERE namespace = ?", (path,)
            ).fetchone()
            return row

        row = await self.db.read(op)
        if row is None or row["expires_ms"] < now_ms():
            raise ResourceNotFound(f"Indexed task not found for {path}")
        return _entry(row)

    async def insert(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        expires_ms = parse_ms(body["expires"])
        try:
            rank = float(body["rank"])
        except OverflowError as exc:
            raise InputError("rank is too large") from exc

        def op(conn: sqlite3.Connection) -> sqlite3.Row:
            upsert(conn, namespace, body["taskId"], rank, body["data"], expires_ms)
            row: sqlite3.Row = conn.execute(
                "SELECT * FROM index_entries WHERE namespace = ?", (namespace,)
            ).fetchone()
            return row

        return _entry(await self.db.run(op))
