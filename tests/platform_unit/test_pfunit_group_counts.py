"""The per-group state counts the inspector's group page reads (migration 0005).

They are kept by triggers, so every way a task row appears, changes state, moves or disappears
must keep them equal to a real ``COUNT(*)``; and a database made before the migration gets them
back-filled. Driven on a real SQLite store opened through ``Database`` (migrations applied as in
the platform), with rows written by the queue's own ``taskstore.insert`` / ``transition``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tcworker.platform.queue import taskstore
from tcworker.platform.store.db import Database
from tcworker.platform.store.models import TaskRecord

NOW = 1_700_000_000_000


def counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT task_group_id, state, n FROM task_group_state_counts").fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def truth(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT task_group_id, state, COUNT(*) FROM tasks GROUP BY task_group_id, state")
    return {(r[0], r[1]): int(r[2]) for r in rows}


def insert(conn: sqlite3.Connection, task_id: str, group: str, state: str = "pending") -> None:
    definition = {
        "taskQueueId": "p/w",
        "schedulerId": "-",
        "projectId": "none",
        "taskGroupId": group,
        "priority": "lowest",
        "requires": "all-completed",
    }
    task = TaskRecord(task_id, definition, 1, 1, NOW + 3600_000, NOW + 7200_000)
    task.state = state
    taskstore.insert(conn, task, taskstore.PendingOrder())


def test_counts_follow_inserts_state_changes_moves_and_deletes(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(tmp_path / "platform.sqlite3")
        await db.open()
        try:

            def steps(conn: sqlite3.Connection) -> None:
                for i in range(6):
                    insert(conn, f"t{i}", "g1" if i < 4 else "g2")
                assert counts(conn) == truth(conn) == {("g1", "pending"): 4, ("g2", "pending"): 2}
                conn.execute("UPDATE tasks SET state = 'running' WHERE task_id IN ('t0', 't1')")
                conn.execute("UPDATE tasks SET state = 'completed' WHERE task_id = 't0'")
                conn.execute("UPDATE tasks SET runs = '[]' WHERE task_id = 't2'")  # no state change
                conn.execute("UPDATE tasks SET state = 'pending' WHERE task_id = 't3'")  # same state
                assert counts(conn) == truth(conn)
                conn.execute("UPDATE tasks SET task_group_id = 'g2' WHERE task_id = 't1'")
                assert counts(conn) == truth(conn)
                conn.execute("DELETE FROM tasks WHERE task_id IN ('t0', 't4')")
                assert counts(conn) == truth(conn)
                assert ("g1", "completed") not in counts(conn)  # emptied rows go away
                conn.execute("DELETE FROM tasks")
                assert counts(conn) == {}

            await db.run(steps)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_database_from_before_the_migration_is_back_filled(tmp_path: Path) -> None:
    path = tmp_path / "platform.sqlite3"

    async def scenario() -> None:
        db = Database(path)
        await db.open()
        await db.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(path, isolation_level=None)
    # Back to the schema of migration 0004, with tasks in it.
    conn.executescript(
        "DROP TRIGGER tasks_count_insert; DROP TRIGGER tasks_count_delete; DROP TRIGGER tasks_count_state;"
        " DROP TABLE task_group_state_counts; CREATE INDEX tasks_group_state ON tasks (task_group_id, state);"
        " DELETE FROM schema_migrations WHERE version = 5;"
    )
    for i in range(5):
        insert(conn, f"t{i}", "g1" if i % 2 else "g2", "running" if i < 2 else "pending")
    conn.close()
    asyncio.run(scenario())
    conn = sqlite3.connect(path)
    assert counts(conn) == truth(conn) and sum(counts(conn).values()) == 5
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "tasks_group_state" not in indexes
    conn.close()
