"""generic-worker's artifact rules as pure functions: content type, content encoding, expiry window.

Kept apart from the upload machinery so they can be unit-tested exhaustively
(spec/worker.md §2.3, GW ``TestFileArtifactWithContentEncoding``, ``TestArtifactExpires*``).
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import posixpath
from functools import cache

from tcworker import tctime

# Extensions (case-sensitive, with the dot) already compressed: uploaded with identity encoding.
COMPRESSED_EXTENSIONS = frozenset(
    ".7z .aab .apk .br .bz2 .deb .dmg .flv .gif .gz .jar .jpeg .jpg .lz .lz4 .mz .npz .pkg .png "
    ".swf .sz .tbz .tgz .wasm .webp .whl .woff .woff2 .xpi .xz .zip .zst .zz".split()
)

# Looked up before the system table (generic-worker's own additions).
CUSTOM_TYPES = {".log": "text/plain", ".jsonl": "application/jsonl"}

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# One second of slack each side of the allowed window (generic-worker's tolerance).
EXPIRY_SLACK = dt.timedelta(seconds=1)


@cache
def _mime_table() -> mimetypes.MimeTypes:
    """The system MIME table (``/etc/mime.types`` …), read once per process."""
    table = mimetypes.MimeTypes()
    for path in mimetypes.knownfiles:
        try:
            table.read(path)
        except OSError:
            continue
    return table


def _extension(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[1]


def guess_content_type(name: str) -> str:
    """Content type from the lower-cased extension; ``text/*`` gets ``; charset=utf-8`` (Go)."""
    ext = _extension(name).lower()
    if not ext:
        return DEFAULT_CONTENT_TYPE
    found = CUSTOM_TYPES.get(ext) or _mime_table().types_map[True].get(ext)
    if not found:
        return DEFAULT_CONTENT_TYPE
    if found.startswith("text/") and "charset" not in found:
        found += "; charset=utf-8"
    return found


def default_content_encoding(name: str) -> str:
    """``identity`` for already-compressed extensions (case-sensitive), ``gzip`` otherwise."""
    return "identity" if _extension(name) in COMPRESSED_EXTENSIONS else "gzip"


def expiry_problem(name: str, expires: str, deadline: str, task_expires: str) -> str | None:
    """Why an explicit ``expires`` is outside ``[deadline − 1 s, task expiry + 1 s]``, or ``None``."""
    when = tctime.parse(expires)
    if when < tctime.parse(deadline) - EXPIRY_SLACK:
        return f"Artifact {name!r} expires ({expires}) before task deadline ({deadline})"
    if when > tctime.parse(task_expires) + EXPIRY_SLACK:
        return f"Artifact {name!r} expires ({expires}) after task expiry ({task_expires})"
    return None


TOO_LARGE = "too-large-file-on-worker"
MIB = 1024 * 1024


def size_problem(name: str, size: int, limit_megabytes: int) -> str | None:
    """Why a file of ``size`` bytes is not uploaded as artifact ``name`` (over the worker's
    ``maxArtifactSizeMegabytes``), or None."""
    if size <= limit_megabytes * MIB:
        return None
    return (
        f"artifact {name!r} is {size} bytes ({size / MIB:.1f} MiB), larger than this worker's "
        f"maxArtifactSizeMegabytes limit of {limit_megabytes} MiB; it was not uploaded"
    )
