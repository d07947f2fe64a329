"""Named docker-worker caches: host directories under ``cachesDir`` bind-mounted into containers.

A payload's ``cache`` maps a cache name to a mount path in the container. Each name owns a pool of
*instances* (``<cachesDir>/docker-worker/<name>/<instance>``): a task takes an idle instance (the
most recently used) or creates a new one, so two concurrent tasks never share a directory, and a
later task sees what an earlier one left (docker-worker's volume caches, spec/worker.md §3.1).

Purging (``onExitStatus.purgeCaches`` and purge-cache service requests) deletes instances created
before a given time; an instance in use is deleted when its task releases it. The index
(``caches.json``) records name, creation and last use of every instance.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcworker.statefile import read_state, write_state
from tcworker.errors import MalformedPayload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheLease:
    """One cache instance lent to one run."""

    name: str
    instance: str
    host_dir: Path
    mount_path: str


def cache_dir_name(name: str) -> str:
    """A file-system-safe, reversible directory name for any cache name (``/``, ``..`` included)."""
    quoted = urllib.parse.quote(name, safe="-_.")
    return quoted.replace(".", "%2E") if quoted in (".", "..") or quoted.startswith(".") else quoted


def parse_cache_payload(cache: Mapping[str, Any]) -> dict[str, str]:
    """Check ``payload.cache``: names non-empty, mount paths absolute and distinct."""
    mounts: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, mount in cache.items():
        if not name:
            raise MalformedPayload("payload.cache has an empty cache name")
        if not isinstance(mount, str) or not mount.startswith("/"):
            raise MalformedPayload(
                f"payload.cache[{name!r}]: the mount point must be an absolute path, got {mount!r}"
            )
        norm = posixpath.normpath(mount)
        if norm == "/":
            raise MalformedPayload(f"payload.cache[{name!r}]: a cache cannot be mounted at /")
        if norm in seen:
            raise MalformedPayload(
                f"payload.cache: caches {seen[norm]!r} and {name!r} are both mounted at {norm!r}"
            )
        seen[norm] = name
        mounts[name] = norm
    return mounts


class CacheStore:
    """The cache instances of one worker process, under ``root`` (``<cachesDir>/docker-worker``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index = root / "caches.json"
        self._lock = asyncio.Lock()
        self._in_use: set[str] = set()
        self._doomed: set[str] = set()

    def _instance_dir(self, entry: Mapping[str, Any], instance: str) -> Path:
        return self.root / cache_dir_name(str(entry["name"])) / instance

    async def acquire(self, mounts: Mapping[str, str]) -> list[CacheLease]:
        """Lend one instance per cache name (creating empty ones as needed)."""
        leases: list[CacheLease] = []
        async with self._lock:
            state = read_state(self._index)
            instances: dict[str, Any] = state.setdefault("instances", {})
            for name, mount in mounts.items():
                idle = [
                    (entry.get("lastUsed", 0), iid)
                    for iid, entry in instances.items()
                    if entry.get("name") == name and iid not in self._in_use and iid not in self._doomed
                ]
                if idle:
                    iid = max(idle)[1]
                else:
                    iid = uuid.uuid4().hex[:12]
                    instances[iid] = {"name": name, "created": time.time(), "lastUsed": 0}
                path = self._instance_dir(instances[iid], iid)
                await asyncio.to_thread(_make_cache_dir, path)
                instances[iid]["lastUsed"] = time.time()
                self._in_use.add(iid)
                leases.append(CacheLease(name=name, instance=iid, host_dir=path, mount_path=mount))
            await asyncio.to_thread(write_state, self._index, state)
        return leases

    async def release(self, leases: list[CacheLease], *, purge: bool = False) -> None:
        """Give instances back; with ``purge`` (or a purge request meanwhile) delete them."""
        async with self._lock:
            state = read_state(self._index)
            instances: dict[str, Any] = state.setdefault("instances", {})
            for lease in leases:
                self._in_use.discard(lease.instance)
                if purge or lease.instance in self._doomed:
                    self._doomed.discard(lease.instance)
                    instances.pop(lease.instance, None)
                    await asyncio.to_thread(shutil.rmtree, lease.host_dir, True)
                    log.info("purged cache %r instance %s", lease.name, lease.instance)
                elif lease.instance in instances:
                    instances[lease.instance]["lastUsed"] = time.time()
            await asyncio.to_thread(write_state, self._index, state)

    async def purge(self, name: str, before: float) -> int:
        """Delete instances of ``name`` created before ``before`` (epoch seconds); instances in
        use are deleted when released. Returns how many were affected."""
        count = 0
        async with self._lock:
            state = read_state(self._index)
            instances: dict[str, Any] = state.setdefault("instances", {})
            for iid, entry in list(instances.items()):
                if entry.get("name") != name or entry.get("created", 0) >= before:
                    continue
                count += 1
                if iid in self._in_use:
                    self._doomed.add(iid)
                    continue
                del instances[iid]
                await asyncio.to_thread(shutil.rmtree, self._instance_dir(entry, iid), True)
                log.info("purged cache %r instance %s (purge request)", name, iid)
            await asyncio.to_thread(write_state, self._index, state)
        return count

    def names(self) -> dict[str, int]:
        """Cache name → number of instances on disk (for tests and diagnostics)."""
        out: dict[str, int] = {}
        for entry in read_state(self._index).get("instances", {}).values():
            out[str(entry.get("name"))] = out.get(str(entry.get("name")), 0) + 1
        return out


def _make_cache_dir(path: Path) -> None:
    """Create an instance directory; world-writable so images with a non-root USER can fill it.
    Its parents are 0700, so no other host user reaches it."""
    root = path.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.mkdir()
        path.chmod(0o777)
