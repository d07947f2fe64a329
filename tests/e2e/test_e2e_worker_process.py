"""End to end: the worker process as a supervisor sees it — concurrency, exit codes, config errors.

`capacity: 4` really runs four tasks at once; `numberOfTasksToRun` exits 0 and claims no more;
`idleTimeoutSecs` exits 68; a config that cannot be used exits 64 or 73 and names the key
(spec/worker.md §1.2, §1.3).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.submitter import Submitter
from helpers.workerproc import run_cli, worker_config

pytestmark = pytest.mark.timeout(120)


def test_capacity_4_runs_four_tasks_at_once(submitter: Submitter, start_worker) -> None:
    stamp = "echo START=$(date +%s.%N); sleep 3; echo END=$(date +%s.%N)"
    task_ids = [submitter.create({"command": [["sh", "-c", stamp]], "maxRunTime": 60}) for _ in range(4)]
    worker = start_worker(capacity=4)
    starts, ends = [], []
    for task_id in task_ids:
        run = submitter.wait_run(task_id, worker=worker)
        assert run["state"] == "completed", run
        log = submitter.log(task_id)
        starts.append(float(re.search(r"^START=([\d.]+)$", log, re.M).group(1)))  # type: ignore[union-attr]
        ends.append(float(re.search(r"^END=([\d.]+)$", log, re.M).group(1)))  # type: ignore[union-attr]
    assert max(starts) < min(ends), f"the four tasks did not overlap: starts={starts} ends={ends}"
    span = max(ends) - min(starts)
    assert span < 6.5, f"four 3-second tasks took {span:.1f}s end to end; run one by one they take 12s"


def test_number_of_tasks_to_run_exits_0_and_claims_no_more(submitter: Submitter, start_worker) -> None:
    task_ids = [submitter.create({"command": [["true"]], "maxRunTime": 30}) for _ in range(3)]
    worker = start_worker(numberOfTasksToRun=2)
    assert worker.wait(60) == 0, worker.tail()
    states = [submitter.status(t)["runs"][0]["state"] for t in task_ids]
    assert states == ["completed", "completed", "pending"], states


def test_idle_timeout_exits_68(submitter: Submitter, start_worker) -> None:
    worker = start_worker(idleTimeoutSecs=2)
    started = time.monotonic()
    code = worker.wait(60)
    elapsed = time.monotonic() - started
    assert code == 68, f"idle timeout must exit 68:\n{worker.tail()}"
    assert elapsed >= 2, f"exited after {elapsed:.1f}s, before idleTimeoutSecs elapsed"


def _run_with_config(tmp_path: Path, content: str | None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "generic-worker.config"
    if content is not None:
        path.write_text(content)
    return run_cli("run", "--config", str(path), cwd=tmp_path)


def _valid(tmp_path: Path) -> dict[str, Any]:
    key = tmp_path / "key"
    key.write_text("not-used-before-validation")
    key.chmod(0o600)
    return worker_config("http://127.0.0.1:9", "token", tmp_path, key, workerType="e2e-config")


CASES: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("unknown-key", {"bogusConfigKey": 1}, 64, ("bogusConfigKey",)),
    ("wrong-type", {"capacity": "4"}, 64, ("capacity",)),
    ("string-boolean", {"cleanUpTaskDirs": "false"}, 64, ("cleanUpTaskDirs",)),
    ("missing-required", {"workerId": None}, 73, ("workerId",)),
    ("capacity-zero", {"capacity": 0}, 73, ("capacity",)),
    ("bad-engine", {"engine": "bogus-engine"}, 73, ("engine",)),
    (
        "every-problem-named",
        {"workerId": None, "rootURL": None, "capacity": 0},
        73,
        ("workerId", "rootURL", "capacity"),
    ),
]


@pytest.mark.parametrize(("change", "code", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_exits_with_generic_worker_code_naming_the_key(
    tmp_path: Path, change: dict[str, Any], code: int, named: tuple[str, ...]
) -> None:
    config = _valid(tmp_path)
    for key, value in change.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    result = _run_with_config(tmp_path, json.dumps(config))
    output = result.stdout + result.stderr
    assert result.returncode == code, f"want exit {code}, got {result.returncode}:\n{output}"
    for key in named:
        assert key in output, f"the message must name {key!r}:\n{output}"


@pytest.mark.parametrize(
    "content", [None, "{not json", "[1, 2]"], ids=["missing-file", "not-json", "not-object"]
)
def test_unusable_config_file_exits_64(tmp_path: Path, content: str | None) -> None:
    result = _run_with_config(tmp_path, content)
    assert result.returncode == 64, f"got {result.returncode}:\n{result.stdout}{result.stderr}"
    assert "generic-worker.config" in result.stdout + result.stderr, "the message must name the file"


def test_access_token_never_printed_on_config_errors(tmp_path: Path) -> None:
    config = _valid(tmp_path)
    config["accessToken"] = "sekrit-e2e-token-value"
    config["capacity"] = 0
    result = _run_with_config(tmp_path, json.dumps(config))
    assert result.returncode == 73
    assert "sekrit-e2e-token-value" not in result.stdout + result.stderr


def test_the_resolved_count_survives_a_restart_and_the_status_file_follows_the_runs(
    submitter: Submitter, start_worker, tmp_path: Path
) -> None:
    """generic-worker's ``tasks-resolved-count.txt`` (in the worker's directory) counts toward
    ``numberOfTasksToRun`` across restarts; ``$TMPDIR/worker-status.json`` lists the running
    task ids and is gone when the worker is idle. Both are written by the worker's state thread:
    they must still be on disk when the worker has exited."""
    workdir, tmpdir = tmp_path / "w", tmp_path / "tmp"
    tmpdir.mkdir()
    status = tmpdir / "worker-status.json"
    sleeper = submitter.create({"command": [["sleep", "3"]], "maxRunTime": 30})
    quick = [submitter.create({"command": [["true"]], "maxRunTime": 30}) for _ in range(2)]
    worker = start_worker(numberOfTasksToRun=2, workdir=workdir, env={"TMPDIR": str(tmpdir)})
    deadline = time.monotonic() + 30
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(status.read_text()) == {"currentTaskIds": [sleeper]}
    assert status.stat().st_mode & 0o077 == 0
    assert worker.wait(60) == 0, worker.tail()
    assert (workdir / "tasks-resolved-count.txt").read_text() == "2\n"
    assert not status.exists()  # idle at exit
    worker = start_worker(numberOfTasksToRun=3, workdir=workdir, env={"TMPDIR": str(tmpdir)})
    assert worker.wait(60) == 0, worker.tail()  # one more task, then the limit of 3 is reached
    assert (workdir / "tasks-resolved-count.txt").read_text() == "3\n"
    states = sorted(submitter.status(t)["runs"][0]["state"] for t in [sleeper, *quick])
    assert states == ["completed", "completed", "completed"], states
