"""Copy a payload artifact out of a task directory with the task user's rights (multiuser).

The copy is made by a helper process running under the task's uid, gid and groups: this very
package's ``artifact_reader`` source run as ``python -I -S -c <source> <request>`` (stdlib only, no
import of ``tcworker``, so the task user needs no access to the worker's installation). It streams
the files as frames over a pipe; the worker writes them to ``staging`` under names it chooses
itself, so a file the task user cannot read — ``/etc/shadow``, the worker's signing key, a root-only
file inside the task directory — can never be published, whatever symlink or hard link points at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from tcworker.engines import artifact_reader, runas
from tcworker.engines.base import ArtifactFile, ArtifactInvalid, ArtifactNotReadable
from tcworker.engines.hostsandbox import artifact_problem
from tcworker.engines.process import Identity

HELPER_SOURCE = Path(artifact_reader.__file__).read_text()
NOT_READABLE_AS_TASK_USER = "Could not copy file '{path}' to temporary location as task user: {error}"
HEADER = artifact_reader.HEADER


def _world_executable(path: Path) -> bool:
    """True when any user can execute ``path`` (every parent directory searchable by others)."""
    try:
        real = path.resolve(strict=True)
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


def helper_interpreter() -> str | None:
    """A Python interpreter the task users can run (the worker's own may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and _world_executable(Path(candidate)):
            return candidate
    return None


async def copy_artifact(
    interpreter: str,
    task_dir: Path,
    path: str,
    kind: str,
    staging: Path,
    identity: Identity | None,
    max_file_bytes: int | None = None,
) -> list[ArtifactFile]:
    """The files of a ``file``/``directory`` artifact, copied into ``staging`` as ``identity``
    (``None``: the worker's own user, for runTaskAsCurrentUser). A file over ``max_file_bytes``
    is only sized (by the helper, on the descriptor it opened as the task user) and handed out
    ``oversize``: nothing of it is read or copied. Raises ``ArtifactProblem``."""
    request = {
        "task_dir": str(task_dir),
        "path": path,
        "kind": kind,
        "unreadable": NOT_READABLE_AS_TASK_USER,
        "max_bytes": max_file_bytes,
    }
    argv = [interpreter, "-I", "-S", "-c", HELPER_SOURCE, json.dumps(request)]
    if identity is not None:
        argv = runas.as_user(argv, identity.uid, identity.gid, identity.groups)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd="/",
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    target = Path(tempfile.mkdtemp(prefix="artifact-", dir=staging))
    files: list[ArtifactFile] | None = None
    try:
        files = await _receive(proc.stdout, target, kind)
    except asyncio.IncompleteReadError:
        pass
    finally:
        if files is None:  # refused or broken: stop the helper, drop partial copies
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)
        stderr = await proc.stderr.read()
        await proc.wait()
    if files is None:
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ArtifactNotReadable(f"Could not read {kind} '{path}' as task user: helper failed: {detail[0]}")
    return files


class _Staged:
    """One file being received from the helper, written under a name the worker chose; an
    ``oversize`` one (only its size was sent) gets no file at all."""

    def __init__(self, rel: str, dest: Path, oversize_bytes: int | None = None) -> None:
        self.rel = rel
        self.dest = dest
        self.size = oversize_bytes or 0
        self.oversize = oversize_bytes is not None
        self._file = None if self.oversize else open(dest, "xb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ArtifactInvalid("artifact helper sent content for a file over the size limit")
        self._file.write(data)
        self.size += len(data)

    def close(self) -> ArtifactFile:
        if self._file is not None:
            self._file.close()
        return ArtifactFile(self.rel, self.dest, self.size, oversize=self.oversize)


async def _receive(stream: asyncio.StreamReader, target: Path, kind: str) -> list[ArtifactFile]:
    """Read the helper's frames into files under ``target`` (names chosen here, not by the task)."""
    files: list[ArtifactFile] = []
    current: _Staged | None = None
    try:
        while True:
            kind_byte, length = HEADER.unpack(await stream.readexactly(HEADER.size))
            payload = await stream.readexactly(length) if length else b""
            if kind_byte == b"F" and current is None:
                header = json.loads(payload)
                rel = header["rel"]
                if not _safe_relative(rel, kind):
                    raise ArtifactInvalid(f"artifact helper returned an unsafe name {rel!r}")
                oversize = header.get("oversize")
                if oversize is not None and (not isinstance(oversize, int) or oversize < 0):
                    raise ArtifactInvalid(f"artifact helper sent a bad size {oversize!r}")
                current = _Staged(rel, target / f"f{len(files)}", oversize)
            elif kind_byte == b"D" and current is not None:
                current.write(payload)
            elif kind_byte == b"E" and current is not None:
                files.append(current.close())
                current = None
            elif kind_byte == b"P":
                problem = json.loads(payload)
                raise artifact_problem(problem["reason"], problem["message"])
            elif kind_byte == b"Z" and current is None:
                return files
            else:
                raise ArtifactInvalid(f"artifact helper sent an unexpected frame {kind_byte!r}")
    finally:
        if current is not None:
            current.close()


def _safe_relative(rel: object, kind: str) -> bool:
    if not isinstance(rel, str):
        return False
    if kind == "file":
        return rel == ""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)
