"""Task log line formats exactly as generic-worker writes them (GW TestLogFormat)."""

from __future__ import annotations

import re
from pathlib import Path

from tcworker.worker.tasklog import TaskLog, format_lines


def test_info_warn_error_prefixes() -> None:
    ts = "2017-01-25T23:31:13.787Z"
    assert format_lines("info", "hello", ts) == "[taskcluster 2017-01-25T23:31:13.787Z] hello\n"
    assert format_lines("warn", "careful", ts) == "[taskcluster:warn 2017-01-25T23:31:13.787Z] careful\n"
    assert format_lines("error", "broken", ts) == "[taskcluster:error] broken\n"


def test_multi_line_messages_prefix_every_line() -> None:
    assert format_lines("error", "a\nb") == "[taskcluster:error] a\n[taskcluster:error] b\n"


def test_timestamps_have_milliseconds_and_z(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live_backing.log")
    log.info("x")
    log.close()
    line = (tmp_path / "live_backing.log").read_text()
    assert re.fullmatch(r"\[taskcluster \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] x\n", line)


def test_output_is_kept_verbatim_and_worker_lines_start_on_a_new_line(tmp_path: Path) -> None:
    seen: list[bytes] = []
    log = TaskLog(tmp_path / "l.log")
    log.add_listener(seen.append)
    log.write(b"no newline")
    log.error("after")
    log.write(b"\x00binary\n")
    log.close()
    data = (tmp_path / "l.log").read_bytes()
    assert data == b"no newline\n[taskcluster:error] after\n\x00binary\n"
    assert b"".join(seen) == data
    log.write(b"ignored after close")


def test_registered_secrets_are_masked_even_across_chunks(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "l.log")
    log.add_secrets(["hunter2-secret"])
    log.write(b"the password is hunter2-")
    log.write(b"secret, ok\n")
    log.info("also hunter2-secret here")
    log.close()
    data = (tmp_path / "l.log").read_text()
    assert "hunter2-secret" not in data
    assert "the password is [secret], ok\n" in data
