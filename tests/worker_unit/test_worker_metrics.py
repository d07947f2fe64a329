"""WorkerMetrics' health rule and listen-address parsing (the HTTP side is tested end to end)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tcworker.worker.metrics import STALE_AFTER, WorkerMetrics, parse_listen_address


def test_health_is_503_when_the_queue_was_not_reached_for_a_while(tmp_path: Path) -> None:
    metrics = WorkerMetrics(lambda: 0, 1, tmp_path)
    assert metrics.healthy() == (True, "claiming")
    metrics.last_queue_contact = time.monotonic() - STALE_AFTER - 1
    ok, why = metrics.healthy()
    assert not ok and why.startswith("queue not reached for")
    metrics.queue_reached()
    assert metrics.healthy()[0]
    metrics.stopping = True
    assert metrics.healthy() == (False, "shutting down")


def test_listen_address_defaults_to_loopback() -> None:
    assert parse_listen_address("9100") == ("127.0.0.1", 9100)
    assert parse_listen_address(":9100") == ("127.0.0.1", 9100)
    assert parse_listen_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen_address("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError, match="port"):
        parse_listen_address("localhost:http")
