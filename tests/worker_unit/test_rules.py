"""Pure rules: resolutions, task directory names, artifact content type / encoding / expiry, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcworker.durations import go_duration
from tcworker.engines.base import EXIT_ABORTED, CancelReason, ProcessResult
from tcworker.errors import (
    IntermittentTask,
    MalformedPayload,
    TaskCancelled,
    TaskFailed,
    WorkerShutdown,
    resolution_of,
)
from tcworker.features import artifact_rules as rules
from tcworker.features.command_executor import error_for_result, footer_lines
from tcworker.taskdirs import remove_task_dirs, task_dir_name


@pytest.mark.parametrize(
    "result,expected",
    [
        (ProcessResult(exit_code=0), ("completed", None)),
        (ProcessResult(exit_code=1), ("failed", None)),
        (ProcessResult(exit_code=-2, start_error="not found"), ("failed", None)),
        (ProcessResult(exit_code=5), ("exception", "intermittent-task")),
        (ProcessResult(exit_code=EXIT_ABORTED, cancel_reason=CancelReason.MAX_RUN_TIME), ("failed", None)),
        (
            ProcessResult(exit_code=EXIT_ABORTED, cancel_reason=CancelReason.WORKER_STOPPING),
            ("exception", "worker-shutdown"),
        ),
        (ProcessResult(exit_code=EXIT_ABORTED, cancel_reason=CancelReason.CANCELLED), ("none", None)),
        (ProcessResult(exit_code=-1, signal=9), ("failed", None)),
    ],
)
def test_command_results_map_to_resolutions(result: ProcessResult, expected: tuple[str, str | None]) -> None:
    error = error_for_result(result, frozenset({5}))
    assert resolution_of([error] if error else []) == expected


def test_max_run_time_error_line_says_so() -> None:
    error = error_for_result(
        ProcessResult(exit_code=-4, cancel_reason=CancelReason.MAX_RUN_TIME), frozenset()
    )
    assert "max run time exceeded" in str(error)


def test_negative_codes_never_match_retry() -> None:
    error = error_for_result(ProcessResult(exit_code=-1), frozenset({1}))
    assert isinstance(error, TaskFailed)


def test_first_error_decides_but_shutdown_and_cancel_win() -> None:
    assert resolution_of([MalformedPayload("x"), TaskFailed("y")]) == ("exception", "malformed-payload")
    assert resolution_of([TaskFailed("y"), WorkerShutdown("z")]) == ("exception", "worker-shutdown")
    assert resolution_of([IntermittentTask("i"), TaskCancelled("c")]) == ("none", None)
    assert resolution_of([RuntimeError("bug")]) == ("exception", "internal-error")


def test_footer_lines_are_right_aligned() -> None:
    lines = footer_lines(ProcessResult(exit_code=0, wall_time=0.0105, user_time=0.0012))
    assert lines[0] == " " * 23 + "Exit Code: 0"
    assert lines[-1].endswith("Result: SUCCEEDED")
    assert "Wall Time: 10.5ms" in lines[3]


@pytest.mark.parametrize(
    "task_id,run_id,name",
    [
        ("KTBKfEgxR5GdfIIREQIvFQ", 0, "task_KTBKfEgxR5Gdf_0"),
        ("KTBKfEgxR5GdfIIREQIvFQ", 12, "task_KTBKfEgxR5Gd_12"),
        ("abc", 3, "task_abc_3"),
    ],
)
def test_task_dir_names_are_at_most_20_chars(task_id: str, run_id: int, name: str) -> None:
    assert task_dir_name(task_id, run_id) == name
    assert len(task_dir_name(task_id, run_id)) <= 20


def test_only_task_directories_are_removed(tmp_path: Path) -> None:
    (tmp_path / "task_old_0").mkdir()
    (tmp_path / "task_old_0" / "f").write_text("x")
    (tmp_path / "task_running_0").mkdir()
    (tmp_path / "task_file").write_text("a plain file")
    (tmp_path / "other").mkdir()
    removed = remove_task_dirs(tmp_path, keep={"task_running_0"})
    assert removed == ["task_old_0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "task_file", "task_running_0"]


def test_directories_claimed_after_the_keep_snapshot_survive(tmp_path: Path) -> None:
    """The purge runs in a thread while runs start: besides the ``keep`` snapshot it asks, per
    directory found, whether it is in use now (a run claimed meanwhile, a multiuser pool home)."""
    for name in ("task_old_0", "task_new_0", "task_pool1234567890ab"):
        (tmp_path / name).mkdir()
    in_use_now = {"task_new_0", "task_pool1234567890ab"}
    asked: list[str] = []

    def in_use(name: str) -> bool:
        asked.append(name)
        return name in in_use_now

    removed = remove_task_dirs(tmp_path, keep=set(), in_use=in_use)
    assert removed == ["task_old_0"]
    assert sorted(asked) == ["task_new_0", "task_old_0", "task_pool1234567890ab"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task_new_0", "task_pool1234567890ab"]


@pytest.mark.parametrize(
    "name,ctype,encoding",
    [
        ("public/a.txt", "text/plain; charset=utf-8", "gzip"),
        ("b.jpg", "image/jpeg", "identity"),
        ("c.json", "application/json", "gzip"),
        ("d.log", "text/plain; charset=utf-8", "gzip"),
        ("e.jsonl", "application/jsonl", "gzip"),
        ("f.tar.gz", "application/gzip", "identity"),
        ("no-extension", "application/octet-stream", "gzip"),
        ("upper.JPG", "image/jpeg", "gzip"),  # encoding table is case-sensitive, types are not
    ],
)
def test_content_type_and_encoding(name: str, ctype: str, encoding: str) -> None:
    assert rules.guess_content_type(name) == ctype
    assert rules.default_content_encoding(name) == encoding


def test_artifact_expiry_window_with_one_second_slack() -> None:
    deadline, expires = "2030-01-01T00:00:00.000Z", "2030-02-01T00:00:00.000Z"
    assert rules.expiry_problem("a", deadline, deadline, expires) is None
    assert rules.expiry_problem("a", expires, deadline, expires) is None
    assert rules.expiry_problem("a", "2029-12-31T23:59:59.500Z", deadline, expires) is None
    before = rules.expiry_problem("a", "2029-12-31T23:59:58.000Z", deadline, expires)
    after = rules.expiry_problem("a", "2030-02-01T00:00:02.000Z", deadline, expires)
    assert before is not None and "expires before task deadline" in before.replace(
        "(2029-12-31T23:59:58.000Z) ", ""
    )
    assert after is not None and "after task expiry" in after


@pytest.mark.parametrize(
    "seconds,text", [(0, "0s"), (0.0012, "1.2ms"), (0.0105, "10.5ms"), (1.234, "1.234s"), (123.5, "2m3.5s")]
)
def test_durations_print_like_go(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_small_gzip_copy_stays_in_memory_and_decodes_to_the_original(tmp_path: Path) -> None:
    import gzip
    import hashlib

    from tcworker.tcapi.gzip_upload import compress

    source = tmp_path / "small.log"
    data = b"[taskcluster 2026-12-02T00:00:00.000Z] a short log\n" * 20
    source.write_bytes(data)
    copy = compress(source, tmp_path, 1)
    assert copy.path is None and copy.data is not None
    assert gzip.decompress(copy.data) == data
    assert copy.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.log"], "no temp file is left"


def test_gzip_copy_decodes_to_the_original_and_hashes_the_original(tmp_path: Path) -> None:
    import gzip
    import hashlib

    from tcworker.tcapi.gzip_upload import compress

    source = tmp_path / "big.txt"
    data = b"hello gzip\n" * 50_000
    source.write_bytes(data)
    copy = compress(source, tmp_path)
    packed, hashes = copy.path, copy.hashes
    try:
        assert gzip.decompress(packed.read_bytes()) == data
        assert packed.stat().st_size < len(data) // 10
        assert hashes == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha512": hashlib.sha512(data).hexdigest(),
        }
    finally:
        packed.unlink()
