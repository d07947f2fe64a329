"""generic-worker's shell framing: type byte 1 = stdin, 2 = resize with uint16 LE columns then rows."""

from __future__ import annotations

from tcworker.interactive.protocol import parse_resize, resize_message, stdin_message


def test_framing_matches_generic_worker() -> None:
    assert stdin_message(b"ls\n") == b"\x01ls\n"
    assert resize_message(300, 2) == b"\x02\x2c\x01\x02\x00"
    assert parse_resize(resize_message(300, 2)) == (300, 2)


def test_short_resize_is_ignored() -> None:
    assert parse_resize(b"\x02\x01\x00\x02") is None
