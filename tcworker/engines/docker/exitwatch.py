"""A container's exit code from its ``die`` event, which Docker sends before ``wait`` answers.

dockerd emits a container's ``die`` event (with the exit code) as soon as the process has exited
and its output is drained, but answers ``POST /containers/{id}/wait`` only after its own clean-up
of the container (unmounting the root file system, releasing the network): measured here ~0.2 s
later for every container, loaded or not. Nothing of the run depends on that clean-up (artifact
copies and ``commit`` wait for it inside dockerd; removal comes after the report), so the engine
subscribes to the container's events before starting it and takes whichever of the two answers
comes first; ``wait`` stays the fallback when the event stream fails.
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker


class ExitWatch:
    """The ``die`` event stream of one created, not yet started container."""

    def __init__(self, stream: Any, container_id: str) -> None:
        self._stream = stream
        self._container_id = container_id

    @classmethod
    def open(cls, api: docker.APIClient, container_id: str) -> ExitWatch:
        """Subscribe (blocking) before the container starts, so its ``die`` cannot be missed."""
        stream = api.events(filters={"type": "container", "container": container_id, "event": "die"}, decode=True)
        return cls(stream, container_id)

    def exit_code(self) -> int:
        """Block until the container's ``die`` event; its exit code. Raises ``EOFError`` when the
        stream ends first (closed, or the daemon went away)."""
        try:
            for event in self._stream:
                actor = event.get("Actor") or {}
                if event.get("Action") == "die" and actor.get("ID") == self._container_id:
                    return int((actor.get("Attributes") or {})["exitCode"])
        finally:
            self.close()
        raise EOFError(f"the event stream of container {self._container_id} ended before its exit")

    def close(self) -> None:
        """End the subscription (idempotent); a blocked ``exit_code`` then returns or raises."""
        with contextlib.suppress(Exception):  # already closed / the daemon went away
            self._stream.close()
