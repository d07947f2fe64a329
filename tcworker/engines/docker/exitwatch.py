"""A container's exit code from its ``die`` event, which Docker sends before ``wait`` answers.

dockerd emits a container's ``die`` event (with the exit code) as soon as the process has exited
and its output is drained, but answers ``POST /containers/{id}/wait`` only after its own clean-up
of the container (unmounting the root file system, releasing the network): measured here ~0.2 s
later for every container, loaded or not. Nothing of the run depends on that clean-up (artifact
copies and ``commit`` wait for it inside dockerd; removal comes after the report), so the engine
subscribes to the container's events before starting it and takes whichever of the two answers
comes first; ``wait`` stays the fallback when the event stream fails. The same stream carries the
container's ``oom`` events, which dockerd sends before ``die`` when the kernel's OOM killer hit a
process of the container: that is the ``State.OOMKilled`` fact, known without an inspect, which
dockerd would also hold back until its clean-up is done.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import docker


@dataclass(frozen=True)
class ContainerExit:
    """What the event stream said about a container's end."""

    code: int
    oom_killed: bool  # an ``oom`` event came before the ``die``


class ExitWatch:
    """The ``die`` event stream of one created, not yet started container."""

    def __init__(self, stream: Any, container_id: str) -> None:
        self._stream = stream
        self._container_id = container_id

    @classmethod
    def open(cls, api: docker.APIClient, container_id: str) -> ExitWatch:
        """Subscribe (blocking) before the container starts, so its ``die`` cannot be missed."""
        stream = api.events(
            filters={"type": "container", "container": container_id, "event": ["oom", "die"]}, decode=True
        )
        return cls(stream, container_id)

    def wait_exit(self) -> ContainerExit:
        """Block until the container's ``die`` event; its exit code and whether an ``oom`` event
        came first. Raises ``EOFError`` when the stream ends first (closed, or the daemon went
        away)."""
        oom_killed = False
        try:
            for event in self._stream:
                actor = event.get("Actor") or {}
                if actor.get("ID") != self._container_id:
                    continue
                if event.get("Action") == "oom":
                    oom_killed = True
                elif event.get("Action") == "die":
                    return ContainerExit(int((actor.get("Attributes") or {})["exitCode"]), oom_killed)
        finally:
            self.close()
        raise EOFError(f"the event stream of container {self._container_id} ended before its exit")

    def close(self) -> None:
        """End the subscription (idempotent); a blocked ``wait_exit`` then returns or raises."""
        with contextlib.suppress(Exception):  # already closed / the daemon went away
            self._stream.close()
