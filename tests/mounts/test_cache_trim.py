"""``CacheStore.trim_idle`` runs before every claim: it skips re-reading an index nobody changed,
and still sees every change — its own and another store's on the same ``cachesDir``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tcworker.caches.store import KIND_GENERIC, CacheStore


async def _idle_instances(store: CacheStore, name: str, count: int) -> None:
    leases = await store.acquire([(name, f"m{i}") for i in range(count)], kind=KIND_GENERIC)
    await store.release(leases)


def _names(store: CacheStore) -> list[str]:
    return sorted(e["name"] for e in store._read()[1].values())


def test_trim_keeps_the_newest_and_sees_changes_made_by_another_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        ours, theirs = CacheStore(tmp_path), CacheStore(tmp_path)
        await _idle_instances(ours, "toolchain", 3)
        assert await ours.trim_idle(1) == 2
        assert _names(ours) == ["toolchain"]
        assert await ours.trim_idle(1) == 0  # unchanged: nothing read, nothing removed

        await _idle_instances(theirs, "toolchain", 2)  # another worker replaced the index
        assert _names(ours) == ["toolchain", "toolchain"]
        assert await ours.trim_idle(1) == 1
        assert _names(ours) == ["toolchain"]

        leases = await ours.acquire([("toolchain", "m")], kind=KIND_GENERIC)
        await _idle_instances(ours, "toolchain", 1)  # a second instance while one is lent
        assert await ours.trim_idle(1) == 0  # the lent one is not idle: one idle, kept
        await ours.release(leases)
        assert await ours.trim_idle(1) == 1  # returned: two idle now, the older goes

    asyncio.run(scenario())
