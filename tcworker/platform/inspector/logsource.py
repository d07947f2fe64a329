"""Where the task page's script reads a run's log from, decided from the run's artifacts.

The live log artifact (``public/logs/live.log`` unless the payload renames it) is what a user
follows. While a task runs a worker may publish it as a ``reference`` to its own live-log server
(``http://<ip>:<port>/log/<token>``, streamed, resumable with ``?offset=N``, CORS ``*``): the
script then streams that URL directly. Once it is a ``link`` (to the backing log) or an
``object``, the complete log is read through the queue's own artifact URL, which redirects to the
stored object. Anything else (no artifact yet, an error artifact, a reference that is not
http(s)) shows no log and says why. The reference URL comes from the worker and is untrusted:
only http(s) URLs are handed to the browser.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from tcworker.platform.queue.artifacts import Artifact

LIVE_LOG = "public/logs/live.log"
BACKING_LOG = "public/logs/live_backing.log"


@dataclass(frozen=True)
class LogSource:
    """``kind``: ``stream`` (follow a live URL), ``static`` (read once), ``none`` (``note`` says why)."""

    kind: str
    url: str
    name: str
    note: str


def artifact_url(task_id: str, run_id: int, name: str) -> str:
    """The queue's getArtifact URL (same origin; 303 to the content), as the official client builds it."""
    return (
        f"/api/queue/v1/task/{urllib.parse.quote(task_id, safe='')}/runs/{run_id}"
        f"/artifacts/{urllib.parse.quote(name, safe='')}"
    )


def live_log_name(definition: dict[str, Any]) -> str:
    """generic-worker's ``logs.live``, docker-worker's ``log``, else ``public/logs/live.log``."""
    payload = definition.get("payload")
    if isinstance(payload, dict):
        logs = payload.get("logs")
        if isinstance(logs, dict) and isinstance(logs.get("live"), str) and logs["live"]:
            return str(logs["live"])
        if isinstance(payload.get("log"), str) and payload["log"]:
            return str(payload["log"])
    return LIVE_LOG


def is_web_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def log_source(task_id: str, run_id: int, name: str, artifacts: dict[str, Artifact]) -> LogSource:
    art = artifacts.get(name)
    if art is None:
        return LogSource(
            "none", "", name, f"no {name} artifact yet: the log appears when the worker publishes it"
        )
    if art.storage_type == "reference":
        url = art.details.get("url")
        if is_web_url(url):
            return LogSource("stream", str(url), name, "live log streamed from the worker")
        return LogSource("none", "", name, f"{name} is a reference to a URL that is not http(s)")
    if art.storage_type == "error":
        reason = art.details.get("reason", "")
        return LogSource(
            "none", "", name, f"{name} is an error artifact: {reason}: {art.details.get('message', '')}"
        )
    target = artifacts.get(str(art.details.get("artifact", ""))) if art.storage_type == "link" else art
    if target is None or not target.present:
        return LogSource("none", "", name, f"{name} is still being uploaded")
    return LogSource("static", artifact_url(task_id, run_id, name), name, "complete log")
