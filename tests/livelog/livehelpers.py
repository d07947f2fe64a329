"""Helpers of the live-log tests: a timed HTTP reader of a live log, and parsing numbered lines."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import requests

LINE = re.compile(rb"^line (\d+) (\d+\.\d+)$", re.M)


class LiveReader(threading.Thread):
    """Reads ``url`` (following redirects) in a thread, keeping each chunk with its arrival time.

    ``stop_after``: disconnect after that many seconds (a reader that drops and reconnects).
    """

    def __init__(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        stop_after: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.params = params
        self.headers = headers or {}
        self.stop_after = stop_after
        self.chunks: list[tuple[float, bytes]] = []
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.final_url: str | None = None
        self.error: BaseException | None = None
        self.ended = False  # the server closed the stream (EOF), as opposed to us disconnecting

    def run(self) -> None:
        started = time.monotonic()
        try:
            with requests.get(
                self.url, params=self.params, headers=self.headers, stream=True, timeout=(10, 60)
            ) as resp:
                self.status = resp.status_code
                self.response_headers = dict(resp.headers)
                self.final_url = resp.url
                if resp.status_code >= 300:
                    return
                for chunk in resp.iter_content(chunk_size=None):
                    self.chunks.append((time.time(), chunk))
                    if self.stop_after is not None and time.monotonic() - started > self.stop_after:
                        return
                self.ended = True
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def line_arrivals(self) -> dict[int, tuple[float, float]]:
        """Numbered line k → (time printed by the task, time it was complete at the reader)."""
        out: dict[int, tuple[float, float]] = {}
        seen = b""
        for when, chunk in self.chunks:
            seen += chunk
            for match in LINE.finditer(seen):
                k = int(match.group(1))
                if k not in out and seen[match.end() : match.end() + 1] == b"\n":
                    out[k] = (float(match.group(2)), when)
        return out


def numbered_lines(data: bytes) -> list[int]:
    return [int(m.group(1)) for m in LINE.finditer(data)]


def live_url_of(queue: Any, task_id: str, run_id: int = 0, name: str = "public/logs/live.log") -> str:
    """The queue's ``getArtifact`` URL as the official client builds it (the reader follows the 303)."""
    return str(queue.buildUrl("getArtifact", task_id, str(run_id), name))
