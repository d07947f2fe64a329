"""Generic-worker commands in a container write stdout and stderr through one pipe, as on the host.

Why: generic-worker gives a command one pipe for both streams, so its log holds the lines in the
order they were written. A container without a TTY has two (Docker's stdout and stderr FIFOs,
copied by separate goroutines in containerd's shim and in dockerd), and the order between them is
lost on the way: ``echo out; echo err >&2`` reached the log as ``err`` first. With a TTY they share
one terminal, but the terminal turns every ``\\n`` into ``\\r\\n`` (docker-worker payloads keep that:
docker-worker did it). So a generic payload's command starts under a tiny ``/bin/sh`` wrapper that
points its stderr at its stdout (``exec "$@" 2>&1``) and then *is* the command (``exec``: same
PID 1, same signals, same exit status).

The wrapper keeps the rest of what a bare ``docker run`` does: a command that cannot be started is
a start error, not an exit status, so the wrapper checks ``$1`` first the way runc resolves it (a
path must exist and be executable, a bare name must be found in ``PATH``) and, when it cannot be
run, writes runc's wording to its own stderr and exits 127 (126: not executable). Nothing else
ever writes to that stream once the command runs (its stderr is the pipe of stdout), so the
sandbox reads the container's stream 2 as the wrapper's diagnostics. The variables a shell adds
to the environment (``SHLVL``, ``PWD``) are unset again, or set back to the value the task or the
image gave them (the shell changed it at its start).
An image without ``/bin/sh`` runs its commands unwrapped: stdout and stderr then reach the log in
the order dockerd delivers their frames.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

SHELL = "/bin/sh"
WRAPPER_LABEL = "tcworker-one-pipe"  # the wrapper's $0
SHELL_ADDED_VARIABLES = ("SHLVL", "PWD")
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
START_FAILURE_CODES = frozenset({EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE})
MAX_DIAGNOSTIC_BYTES = 4096

_CHECK = (
    'case $1 in */*) '
    'if [ ! -e "$1" ]; then echo "exec: \\"$1\\": stat $1: no such file or directory" >&2; exit 127; fi; '
    'if [ -d "$1" ] || [ ! -x "$1" ]; then echo "exec: \\"$1\\": permission denied" >&2; exit 126; fi;; '
    '*) if ! command -v -- "$1" >/dev/null 2>&1; then '
    'echo "exec: \\"$1\\": executable file not found in \\$PATH" >&2; exit 127; fi;; '
    "esac; "
)


@dataclass(frozen=True)
class ImageCommand:
    """What an image runs when a container of it is started: ``Entrypoint``, ``Cmd``, and the
    shell-added variables its ``Env`` sets (from one ``inspect`` of the image id, which never
    changes)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # (name, value) of SHELL_ADDED_VARIABLES the image sets

    @classmethod
    def from_inspect(cls, inspected: Mapping[str, Any]) -> ImageCommand:
        config = inspected.get("Config") or {}
        pairs = (str(entry).partition("=") for entry in config.get("Env") or [])
        return cls(
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple((name, value) for name, _, value in pairs if name in SHELL_ADDED_VARIABLES),
        )


def wrapper_script(given: Mapping[str, str] | None = None) -> str:
    """The wrapper's ``sh -c`` script; ``given`` = the shell-added variables the container's
    environment had (the task's or the image's values), restored before the ``exec``."""
    given = given or {}
    restore = "".join(f"export {name}={shlex.quote(given[name])}; " for name in sorted(given))
    unset = [name for name in SHELL_ADDED_VARIABLES if name not in given]
    return _CHECK + restore + (f"unset {' '.join(unset)}; " if unset else "") + 'exec "$@" 2>&1'


def wrap(kwargs: Mapping[str, Any], image: ImageCommand, env: Mapping[str, str]) -> dict[str, Any] | None:
    """``containers.create`` arguments that run the same argv under the wrapper, or ``None`` when
    there is nothing to run (no command and no image default: Docker itself reports that)."""
    command = list(kwargs.get("command") or image.cmd)
    argv = list(image.entrypoint) + command
    if not argv:
        return None
    given = {**dict(image.env), **{k: v for k, v in env.items() if k in SHELL_ADDED_VARIABLES}}
    return {
        **kwargs,
        "entrypoint": [SHELL, "-c", wrapper_script(given), WRAPPER_LABEL],
        "command": argv,
    }


def start_failure(exit_code: int, diagnostics: bytes) -> str | None:
    """The wrapper's report that the command could not be started, else ``None``."""
    if exit_code not in START_FAILURE_CODES or not diagnostics:
        return None
    return diagnostics.decode("utf-8", "replace").strip()


async def image_has_sh(api: docker.APIClient, image_id: str, labels: Mapping[str, str]) -> bool:
    """Whether ``/bin/sh`` exists in the image (read from a created, never started container
    labelled as the worker's, so a crashed worker's leftover is found like its others)."""

    def probe() -> bool:
        container = api.create_container(image_id, command=["true"], entrypoint=[], labels=dict(labels))
        try:
            stream, _ = api.get_archive(container["Id"], SHELL)
            stream.close()
            return True
        except docker.errors.NotFound:
            return False
        finally:
            api.remove_container(container["Id"], force=True)

    try:
        return await asyncio.to_thread(probe)
    except docker.errors.APIError:
        return False
