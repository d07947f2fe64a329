"""generic-worker's interactive wire protocol (workers/generic-worker/interactive/), so Taskcluster's
web UI could drive our shells too.

Binary websocket messages. Client → worker: the first byte is the message type — ``1`` stdin
(the rest is written to the PTY), ``2`` resize (then ``uint16`` little-endian columns, ``uint16``
little-endian rows). Worker → client: raw PTY output, no type byte. The websocket lives at
``/shell/<secret>``; a wrong secret is ``401``.
"""

from __future__ import annotations

import struct

MSG_STDIN = 1
MSG_RESIZE = 2
SHELL_PATH = "/shell/"


def stdin_message(data: bytes) -> bytes:
    return bytes([MSG_STDIN]) + data


def resize_message(columns: int, rows: int) -> bytes:
    return bytes([MSG_RESIZE]) + struct.pack("<HH", columns & 0xFFFF, rows & 0xFFFF)


def parse_resize(message: bytes) -> tuple[int, int] | None:
    """``(columns, rows)`` of a resize message, ``None`` when it is too short (ignored, as upstream)."""
    if len(message) < 5:
        return None
    columns, rows = struct.unpack("<HH", message[1:5])
    return columns, rows
