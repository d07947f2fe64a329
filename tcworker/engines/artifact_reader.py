"""Resolve a payload artifact inside a task directory and read it with the caller's own rights.

The rules (spec/worker.md §2.3, generic-worker's messages): the path is relative to the task
directory (an absolute path must lie inside it); it must not leave the task directory, neither
lexically (``../``) nor through a symlink; a missing path, a file that is a directory and a
directory that is a file get generic-worker's exact error messages. Directories are walked without
following directory symlinks; a file symlink inside a directory that points outside the task
directory refuses the whole directory artifact; dangling symlinks and special files (FIFOs,
sockets, devices) inside a directory are skipped.

This module is deliberately standard-library only and imports nothing from ``tcworker``: the
simple engine calls ``resolve`` in-process, and the multiuser engine runs this file's own source
as a helper (``python -I -S -c <source> <request>``) *under the task user's uid*, which streams
the files to the worker over a pipe in small frames (``write_frames``). Everything is therefore
read with the task user's rights, so a symlink to ``/etc/shadow`` or to the worker's signing key
cannot be published even if it were inside the task directory.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import sys
from typing import BinaryIO

MISSING = "file-missing-on-worker"
NOT_READABLE = "file-not-readable-on-worker"
INVALID = "invalid-resource-on-worker"

CHUNK = 1024 * 1024
HEADER = struct.Struct(">cI")  # frame type, payload length


class Problem(Exception):
    """The artifact cannot be published: ``reason`` is the queue's error-artifact reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def full_path(task_dir: str, path: str) -> str:
    """The absolute, normalised path of an artifact ``path`` as written in the payload."""
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(task_dir, path))


def resolve(
    task_dir: str, path: str, kind: str, unreadable: str = "Could not read file '{path}': {error}"
) -> list[tuple[str, str, int]]:
    """``(relative name, real path, size)`` for each file of a ``file``/``directory`` artifact.

    Raises ``Problem``. ``unreadable`` formats the message of an unreadable file (the multiuser
    engine uses generic-worker's "as task user" wording).
    """
    root = os.path.realpath(task_dir)
    full = full_path(task_dir, path)
    label = "File" if kind == "file" else "Directory"
    if not _inside(full, os.path.normpath(task_dir)):
        raise Problem(INVALID, f"{label} artifact '{full}' is outside the task directory '{task_dir}'")
    real = os.path.realpath(full)
    if not _inside(real, root):
        raise Problem(
            INVALID,
            f"{label} artifact '{full}' resolves to '{real}', which is outside the task directory '{task_dir}'",
        )
    try:
        st = os.stat(real)
    except OSError as e:
        if kind == "file" and e.errno in (errno.EACCES, errno.EPERM):
            raise Problem(NOT_READABLE, unreadable.format(path=full, error=e.strerror)) from None
        raise Problem(MISSING, f"Could not read {kind} '{full}'") from None
    if kind == "file":
        if stat.S_ISDIR(st.st_mode):
            raise Problem(INVALID, f"File artifact '{full}' exists as a directory, not a file, on the worker")
        if not stat.S_ISREG(st.st_mode):
            raise Problem(INVALID, f"File artifact '{full}' is not a regular file")
        return [("", real, st.st_size)]
    if not stat.S_ISDIR(st.st_mode):
        raise Problem(
            INVALID, f"Directory artifact '{full}' exists as a file, not a directory, on the worker"
        )
    return _walk(full, real, root, unreadable)


def _walk(full: str, top: str, root: str, unreadable: str) -> list[tuple[str, str, int]]:
    files: list[tuple[str, str, int]] = []
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(top, onerror=errors.append, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            entry = os.path.join(dirpath, name)
            rel = os.path.relpath(entry, top).replace(os.sep, "/")
            real = os.path.realpath(entry)
            if not _inside(real, root):
                raise Problem(
                    INVALID,
                    f"Directory artifact '{full}' contains '{rel}', a symlink to '{real}' "
                    "outside the task directory",
                )
            try:
                st = os.stat(real)
            except FileNotFoundError:
                continue  # dangling symlink
            except OSError as e:
                raise Problem(
                    NOT_READABLE, unreadable.format(path=os.path.join(full, rel), error=e.strerror)
                ) from None
            if stat.S_ISREG(st.st_mode):
                files.append((rel, real, st.st_size))
    if errors:
        first = errors[0]
        raise Problem(INVALID, f"Could not read directory '{full}': {first.strerror}: {first.filename}")
    return sorted(files)


def open_regular(real: str, shown: str, unreadable: str) -> int:
    """Open a resolved file for reading without following a swapped-in symlink or blocking on a
    FIFO; the fd must be a regular file."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise Problem(MISSING, f"Could not read file '{shown}'") from None
        if e.errno == errno.ELOOP:
            raise Problem(
                INVALID, f"File artifact '{shown}' changed into a symlink while being read"
            ) from None
        raise Problem(NOT_READABLE, unreadable.format(path=shown, error=e.strerror)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Problem(INVALID, f"File artifact '{shown}' is not a regular file")
    return fd


def _frame(out: BinaryIO, kind: bytes, payload: bytes) -> None:
    out.write(HEADER.pack(kind, len(payload)))
    out.write(payload)


def write_frames(
    out: BinaryIO, task_dir: str, path: str, kind: str, unreadable: str, max_bytes: int | None = None
) -> None:
    """Stream an artifact as frames: ``F``{rel} ``D``<bytes>… ``E`` per file, then ``Z``; or a
    single ``P``{reason,message} when it cannot be published. A file larger than ``max_bytes``
    (its size taken from the opened descriptor) is ``F``{rel, oversize: size} ``E``: not read."""
    try:
        files = resolve(task_dir, path, kind, unreadable)
        for rel, real, _size in files:
            shown = os.path.join(full_path(task_dir, path), rel) if rel else full_path(task_dir, path)
            fd = open_regular(real, shown, unreadable)
            try:
                size = os.fstat(fd).st_size
                if max_bytes is not None and size > max_bytes:
                    _frame(out, b"F", json.dumps({"rel": rel, "oversize": size}).encode())
                    _frame(out, b"E", b"")
                    continue
                _frame(out, b"F", json.dumps({"rel": rel}).encode())
                while True:
                    try:
                        data = os.read(fd, CHUNK)
                    except OSError as e:
                        raise Problem(NOT_READABLE, unreadable.format(path=shown, error=e.strerror)) from None
                    if not data:
                        break
                    _frame(out, b"D", data)
                _frame(out, b"E", b"")
            finally:
                os.close(fd)
    except Problem as p:
        _frame(out, b"P", json.dumps({"reason": p.reason, "message": p.message}).encode())
    _frame(out, b"Z", b"")
    out.flush()


def helper_main(args: list[str]) -> int:
    """Entry point of the helper: ``args[0]`` is the JSON request {task_dir, path, kind,
    unreadable, max_bytes}."""
    request = json.loads(args[0])
    write_frames(
        sys.stdout.buffer,
        request["task_dir"],
        request["path"],
        request["kind"],
        request["unreadable"],
        request.get("max_bytes"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(helper_main(sys.argv[1:]))
