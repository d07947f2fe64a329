"""The resource monitor's pure rules (issue 14): generic-worker's memory formatting and footer
lines, the abort condition, and that a high-memory abort resolves ``failed`` through the one rule
(``errors.resolution_of``) with the thresholds in the error."""

from __future__ import annotations

from tcworker.cancellation import CancelReason
from tcworker.engines.base import EXIT_ABORTED, ProcessResult
from tcworker.errors import TaskFailed, error_for_cancel, resolution_of
from tcworker.features.command_executor import footer_lines
from tcworker.features.resource_monitor import CommandUsage, Sample, Thresholds, format_memory


def test_format_memory_is_generic_workers() -> None:
    assert format_memory(512) == "512.000000 B"  # Go's %f
    assert format_memory(1536) == "1.50 KiB"
    assert format_memory(524288000) == "500.00 MiB"
    assert format_memory(3 * 1024**3) == "3.00 GiB"
    assert format_memory(1 << 50) == "1048576.00 GiB"  # GiB is the largest unit


def test_usage_lines_average_and_peak_in_the_footer_column() -> None:
    usage = CommandUsage()
    assert usage.lines() == []  # nothing sampled: no lines (as generic-worker)
    for used, task in ((100 << 20, 10 << 20), (300 << 20, 30 << 20)):
        usage.add(Sample(total=1 << 30, used=used, available=(1 << 30) - used, used_percent=0, task=task))
    lines = usage.lines()
    assert lines == [
        " Average Available System Memory: 824.00 MiB",
        "      Average System Memory Used: 200.00 MiB",
        "         Peak System Memory Used: 300.00 MiB",
        "             Total System Memory: 1.00 GiB",
        "        Average Task Memory Used: 20.00 MiB",
        "           Peak Task Memory Used: 30.00 MiB",
    ]
    footer = footer_lines(ProcessResult(exit_code=0, wall_time=1.0), lines)
    assert footer.index(lines[0]) == footer.index(" " * 23 + "Wall Time: 1s") + 1
    assert footer[-1].endswith("Result: SUCCEEDED")
    aborted = footer_lines(
        ProcessResult(exit_code=EXIT_ABORTED, cancel_reason=CancelReason.HIGH_MEMORY), lines
    )
    assert aborted[0].startswith("Command ABORTED after") and aborted[1:] == lines


def test_task_lines_are_left_out_when_the_engine_cannot_tell() -> None:
    usage = CommandUsage()
    usage.add(Sample(total=1 << 30, used=1 << 20, available=1 << 29, used_percent=0.1, task=None))
    assert [line.split(":")[0].strip() for line in usage.lines()] == [
        "Average Available System Memory",
        "Average System Memory Used",
        "Peak System Memory Used",
        "Total System Memory",
    ]


def test_both_thresholds_must_be_crossed() -> None:
    t = Thresholds(max_used_percent=90, min_available_bytes=500 << 20, allowed_seconds=5, warn_only=False)
    assert t.exceeded(95.0, 100 << 20)
    assert not t.exceeded(95.0, 600 << 20)  # plenty available
    assert not t.exceeded(90.0, 100 << 20)  # not *above* the percentage
    assert t.describe() == "above 90% and available memory less than 500.00 MiB"


def test_a_high_memory_abort_resolves_failed_with_the_thresholds() -> None:
    detail = "task aborted due to sustained memory usage above 90% and available memory less than 500.00 MiB"
    error = error_for_cancel(CancelReason.HIGH_MEMORY, detail)
    assert isinstance(error, TaskFailed) and str(error) == detail
    assert resolution_of([], CancelReason.HIGH_MEMORY) == ("failed", None)
    assert resolution_of([error], CancelReason.HIGH_MEMORY) == ("failed", None)
    assert CancelReason.HIGH_MEMORY.kill_at_once and CancelReason.MAX_RUN_TIME.kill_at_once
    assert not CancelReason.WORKER_STOPPING.kill_at_once


def test_host_memory_sample_is_shared_only_while_fresh(monkeypatch) -> None:
    """Concurrent runs share one /proc/meminfo reading, never one older than the limit."""
    from tcworker.features import resource_monitor

    clock = [1000.0]
    monkeypatch.setattr(resource_monitor.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(resource_monitor, "_host_sample", None)
    first = resource_monitor._host_memory()
    clock[0] += resource_monitor.HOST_SAMPLE_MAX_AGE / 2
    assert resource_monitor._host_memory() is first
    clock[0] += resource_monitor.HOST_SAMPLE_MAX_AGE
    fresh = resource_monitor._host_memory()
    assert fresh is not first and fresh.total == first.total
