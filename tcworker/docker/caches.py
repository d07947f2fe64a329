"""Named docker-worker caches: the payload's ``cache`` checked; the instances live in the shared store.

A payload's ``cache`` maps a cache name to a mount path in the container. The instances are
host directories of the one cache store every payload kind shares (``tcworker.mounts.caches``,
kind ``docker-worker``: ``<cachesDir>/docker-worker/<name>/<instance>``), bind-mounted into the
container; a task takes an idle instance or a new one, so two concurrent tasks never share a
directory (docker-worker's volume caches, spec/worker.md §3.1). Purging and GC are the store's.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from tcworker.errors import MalformedPayload
from tcworker.mounts.caches import CacheLease, CacheStore, cache_dir_name

__all__ = ["CacheLease", "CacheStore", "cache_dir_name", "parse_cache_payload"]


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
