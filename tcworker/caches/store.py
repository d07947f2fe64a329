"""The one store of writable caches: generic-worker's ``mounts`` caches and docker-worker's ``cache``.

(``parse_cache_payload`` checks docker-worker's ``payload.cache``.)

Each cache name owns a pool of *instances* (directories), kept per kind so a
``docker-worker:cache:<name>`` scope never reaches data written under
``generic-worker:cache:<name>`` (``<cachesDir>/<kind>/<quoted name>/<instance>``). A run takes
the most recently used idle instance or a new empty one, so two running tasks never share a
directory and a later task sees what an earlier one left. generic-worker mounts *move* the
instance into the task directory and back (``placement``); docker bind-mounts it in place.

Deleting is always deferred for instances in use: a purge request (``purge``) or GC never
touches them; a purge marks them and ``release`` deletes them. ``release(purge=True)`` deletes
what an aborted run or a ``purgeCaches`` exit code leaves. The index (``caches.json``, 0600)
records kind, name, location, creation and last use of every instance; at start-up instances
whose directory vanished (a crash while moved into a task) are dropped and directories no index
entry knows are removed. ``adopt`` takes a directory baked into the machine image (config
``preloadedCaches``) as an idle instance, in place, without copying it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcworker.errors import MalformedPayload
from tcworker.statefile import read_state as read_index
from tcworker.statefile import write_state as write_index

log = logging.getLogger(__name__)

KIND_GENERIC = "generic-worker"
KIND_DOCKER = "docker-worker"
KINDS = (KIND_GENERIC, KIND_DOCKER)
INDEX_NAME = "caches.json"
TRASH_PREFIX = ".trash-"


def cache_dir_name(name: str) -> str:
    """A file-system-safe, reversible directory name for any cache name (``/``, ``..`` included)."""
    quoted = urllib.parse.quote(name, safe="-_.")
    return quoted.replace(".", "%2E") if quoted in (".", "..") or quoted.startswith(".") else quoted


@dataclass(frozen=True)
class CacheLease:
    """One cache instance lent to one run. ``host_dir`` is where the instance lies in the store
    (docker bind-mounts it there; generic-worker moves it to its target and back)."""

    name: str
    instance: str
    host_dir: Path
    mount_path: str = ""
    kind: str = KIND_DOCKER
    fresh: bool = False  # created empty for this run (content may be preloaded into it)


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
    """Every cache instance of one ``cachesDir``; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index_path = root / INDEX_NAME
        self._lock = asyncio.Lock()
        self._in_use: set[str] = set()
        self._doomed: set[str] = set()
        # What ``trim_idle`` last found nothing to do for: (index file, lent instances, keep).
        self._trimmed: tuple[object, frozenset[str], int] | None = None

    # ---- paths and index -----------------------------------------------------------------
    def home_of(self, kind: str, name: str, instance: str) -> Path:
        """Where an instance lives while idle."""
        return self.root / kind / cache_dir_name(name) / instance

    def _location(self, iid: str, entry: Mapping[str, Any]) -> Path:
        loc = entry.get("location")
        return (
            Path(loc) if loc else self.home_of(str(entry.get("kind", KIND_DOCKER)), str(entry["name"]), iid)
        )

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        state = read_index(self._index_path)
        return state, state.setdefault("instances", {})

    async def _write(self, state: dict[str, Any]) -> None:
        await asyncio.to_thread(write_index, self._index_path, state)

    async def _delete_dir(self, path: Path) -> None:
        """Move ``path`` aside at once (so nothing can pick it up) and delete it off the loop."""
        if not await asyncio.to_thread(os.path.lexists, path):
            return
        trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(os.rename, path, trash)
        except OSError:
            trash = path
        await asyncio.to_thread(_remove_any, trash)

    # ---- lending -------------------------------------------------------------------------
    async def acquire(
        self, mounts: Mapping[str, str] | Sequence[tuple[str, str]], kind: str = KIND_DOCKER
    ) -> list[CacheLease]:
        """Lend one instance per (name, mount path), creating empty ones as needed."""
        pairs = list(mounts.items()) if isinstance(mounts, Mapping) else list(mounts)
        leases: list[CacheLease] = []
        async with self._lock:
            state, instances = self._read()
            for name, mount in pairs:
                idle = [
                    (float(entry.get("lastUsed", 0)), iid)
                    for iid, entry in instances.items()
                    if entry.get("name") == name
                    and entry.get("kind", KIND_DOCKER) == kind
                    and iid not in self._in_use
                    and iid not in self._doomed
                    and self._location(iid, entry).is_dir()
                ]
                fresh = not idle
                if idle:
                    iid = max(idle)[1]
                else:
                    iid = uuid.uuid4().hex[:16]
                    instances[iid] = {"name": name, "kind": kind, "created": time.time(), "lastUsed": 0}
                    await asyncio.to_thread(_make_instance_dir, self.home_of(kind, name, iid), kind)
                path = self._location(iid, instances[iid])
                instances[iid]["lastUsed"] = time.time()
                instances[iid]["hits"] = int(instances[iid].get("hits", 0)) + (0 if fresh else 1)
                self._in_use.add(iid)
                leases.append(
                    CacheLease(
                        name=name, instance=iid, host_dir=path, mount_path=mount, kind=kind, fresh=fresh
                    )
                )
            await self._write(state)
        return leases

    def is_doomed(self, lease: CacheLease) -> bool:
        return lease.instance in self._doomed

    async def release(
        self,
        leases: Sequence[CacheLease],
        *,
        purge: bool = False,
        returned_to: Mapping[str, Path] | None = None,
    ) -> list[str]:
        """Give instances back; with ``purge`` (or a purge request meanwhile) delete them.
        ``returned_to`` maps instance → where the caller put the directory back (generic-worker);
        an instance missing from it (when given) was lost and is dropped. Returns deleted names."""
        deleted: list[str] = []
        async with self._lock:
            state, instances = self._read()
            for lease in leases:
                self._in_use.discard(lease.instance)
                lost = returned_to is not None and lease.instance not in returned_to
                entry = instances.get(lease.instance)
                if purge or lost or lease.instance in self._doomed or entry is None:
                    self._doomed.discard(lease.instance)
                    instances.pop(lease.instance, None)
                    where = (returned_to or {}).get(lease.instance, lease.host_dir)
                    if not lost:
                        await self._delete_dir(where)
                    deleted.append(lease.name)
                    log.info("cache %r instance %s deleted", lease.name, lease.instance)
                    continue
                entry["lastUsed"] = time.time()
                if returned_to is not None:
                    entry["location"] = str(returned_to[lease.instance])
            await self._write(state)
        return deleted

    # ---- purging, GC, preloading -----------------------------------------------------------
    async def purge(self, name: str, before: float) -> int:
        """Delete instances of ``name`` (any kind) created before ``before`` (epoch seconds);
        instances in use are deleted when released. Returns how many were affected."""
        count = 0
        async with self._lock:
            state, instances = self._read()
            for iid, entry in list(instances.items()):
                if entry.get("name") != name or float(entry.get("created", 0)) >= before:
                    continue
                count += 1
                if iid in self._in_use:
                    self._doomed.add(iid)
                    continue
                del instances[iid]
                await self._delete_dir(self._location(iid, entry))
                log.info("purged cache %r instance %s (purge request)", name, iid)
            await self._write(state)
        return count

    async def idle_instances(self) -> list[tuple[float, str, str]]:
        """(last used, instance, name) of idle instances, least recently used first."""
        async with self._lock:
            _, instances = self._read()
            return sorted(
                (float(e.get("lastUsed", 0)), iid, str(e.get("name")))
                for iid, e in instances.items()
                if iid not in self._in_use
            )

    async def evict(self, instance: str) -> bool:
        """Delete one idle instance (GC); ``False`` when it is in use or unknown."""
        async with self._lock:
            if instance in self._in_use:
                return False
            state, instances = self._read()
            entry = instances.pop(instance, None)
            if entry is None:
                return False
            await self._delete_dir(self._location(instance, entry))
            await self._write(state)
        log.info("cache %r instance %s evicted", entry.get("name"), instance)
        return True

    async def trim_idle(self, keep_per_name: int) -> int:
        """Keep at most ``keep_per_name`` idle instances per (kind, name); older extras go.

        Runs before every claim, so an unchanged index (same file: every write replaces it, so
        a new inode) with the same instances lent out is not read and parsed again."""
        by_name: dict[tuple[str, str], list[tuple[float, str]]] = {}
        async with self._lock:
            seen = (_file_signature(self._index_path), frozenset(self._in_use), keep_per_name)
            if seen == self._trimmed:
                return 0
            _, instances = self._read()
            for iid, e in instances.items():
                if iid not in self._in_use:
                    key = (str(e.get("kind", KIND_DOCKER)), str(e.get("name")))
                    by_name.setdefault(key, []).append((float(e.get("lastUsed", 0)), iid))
        removed = 0
        for entries in by_name.values():
            for _, iid in sorted(entries, reverse=True)[keep_per_name:]:
                removed += await self.evict(iid)
        if not removed:
            self._trimmed = seen
        return removed

    async def adopt(self, name: str, path: Path, kind: str = KIND_GENERIC) -> bool:
        """Take ``path`` (a directory baked into the machine image) as an idle instance of
        ``name``, unless it already is one. Returns whether it was adopted now."""
        path = _absolute(path)
        async with self._lock:
            state, instances = self._read()
            if any(e.get("location") == str(path) for e in instances.values()):
                return False
            if not path.is_dir() or path.is_symlink():
                return False
            iid = uuid.uuid4().hex[:16]
            instances[iid] = {
                "name": name,
                "kind": kind,
                "created": time.time(),
                "lastUsed": time.time(),
                "location": str(path),
                "preloaded": True,
            }
            await self._write(state)
        log.info("adopted preloaded cache %r at %s", name, path)
        return True

    async def remove_orphans(self) -> list[str]:
        """Drop index entries whose directory is gone; delete directories no entry knows and
        half-deleted trash. Returns what was removed."""
        removed: list[str] = []
        async with self._lock:
            state, instances = self._read()
            for iid, entry in list(instances.items()):
                if iid not in self._in_use and not self._location(iid, entry).is_dir():
                    del instances[iid]
                    removed.append(f"index:{entry.get('name')}/{iid}")
            known = {self._location(iid, e) for iid, e in instances.items()}
            for kind in KINDS:
                kind_dir = self.root / kind
                if not kind_dir.is_dir():
                    continue
                for name_dir in await asyncio.to_thread(lambda d=kind_dir: list(d.iterdir())):
                    if not name_dir.is_dir() or name_dir.is_symlink():
                        continue  # files of other stores (the docker image index) live here too
                    for inst in await asyncio.to_thread(lambda d=name_dir: list(d.iterdir())):
                        if inst not in known and inst.name not in self._in_use:
                            await asyncio.to_thread(_remove_any, inst)
                            removed.append(str(inst.relative_to(self.root)))
            if self.root.is_dir():
                for child in await asyncio.to_thread(lambda: list(self.root.iterdir())):
                    if child.name.startswith(TRASH_PREFIX):
                        await asyncio.to_thread(_remove_any, child)
                        removed.append(child.name)
            await self._write(state)
        if removed:
            log.info("caches: removed orphans %s", ", ".join(removed))
        return removed

    def names(self) -> dict[str, int]:
        """Cache name → number of instances known (for tests and diagnostics)."""
        out: dict[str, int] = {}
        for entry in read_index(self._index_path).get("instances", {}).values():
            out[str(entry.get("name"))] = out.get(str(entry.get("name")), 0) + 1
        return out


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """Inode, size and modification time of ``path`` (``None`` when it is missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _make_instance_dir(path: Path, kind: str) -> None:
    """Create an instance directory below 0700 parents, so no other host user reaches it.
    docker-worker instances are world-writable (images with a non-root USER must fill them)."""
    root = path.parent.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    path.parent.parent.mkdir(exist_ok=True)
    path.parent.parent.chmod(0o700)
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.mkdir()
        path.chmod(0o777 if kind == KIND_DOCKER else 0o755)


def _remove_any(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
