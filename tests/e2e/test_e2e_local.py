"""End to end: `tcworker local TASK.yml` (embedded platform + worker) and `tcworker submit`.

`tcworker local` is the README's first command, so it is run exactly as a new user would: in a
fresh directory, on the shipped `examples/hello.yml`. Exit codes: 0 completed, 1 failed,
2 exception (issue 3).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.submitter import Submitter, iso
from helpers.workerproc import PROVISIONER_ID, REPO_ROOT, clean_env, run_cli

pytestmark = pytest.mark.timeout(150)


def _local(task_file: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli("local", str(task_file), cwd=cwd, timeout=timeout)


def test_local_runs_examples_hello_and_exits_0(tmp_path: Path) -> None:
    hello = REPO_ROOT / "examples" / "hello.yml"
    assert hello.is_file(), "examples/hello.yml must ship with the project"
    result = _local(hello, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # The task's own output (not the "Executing command" line that quotes it) reaches the terminal.
    output_lines = [line.strip() for line in out.splitlines() if not line.startswith("[taskcluster")]
    first = yaml.safe_load(hello.read_text())
    first = (first.get("payload", first))["command"][0]
    if first[0] == "echo":
        assert " ".join(first[1:]) in output_lines, f"the task's output is not streamed:\n{out}"
    else:
        assert any("hello" in line.lower() for line in output_lines), f"no hello output:\n{out}"
    assert "completed" in out, f"the resolution is not printed:\n{out}"
    assert (tmp_path / ".tcworker").is_dir(), "state must live under ./.tcworker"


def test_local_failing_task_exits_1_and_streams_its_log(tmp_path: Path) -> None:
    task = tmp_path / "fail.yml"
    task.write_text(
        yaml.safe_dump({"command": [["sh", "-c", "echo about-to-fail-$((6*7)); exit 3"]], "maxRunTime": 30})
    )
    result = _local(task, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "about-to-fail-42" in out
    assert "failed" in out


def test_local_malformed_payload_exits_2(tmp_path: Path) -> None:
    task = tmp_path / "malformed.yml"
    task.write_text(yaml.safe_dump({"command": [["true"]], "maxRunTime": 30, "notAPayloadKey": True}))
    result = _local(task, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "malformed-payload" in out


def test_local_saves_artifacts_and_prints_their_paths(tmp_path: Path) -> None:
    """Issue 9: the embedded platform stops with the command, so no (dead) URLs but files on disk."""
    task = tmp_path / "art.yml"
    task.write_text(
        yaml.safe_dump(
            {
                "command": [["sh", "-c", "echo result-data > result.txt"]],
                "maxRunTime": 30,
                "artifacts": [{"type": "file", "path": "result.txt", "name": "public/result.txt"}],
            }
        )
    )
    result = _local(task, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    paths = [w for w in out.split() if w.startswith("/") and w.endswith("public/result.txt")]
    assert paths and Path(paths[0]).read_text() == "result-data\n", f"no saved artifact printed:\n{out}"


def test_local_runs_every_shipped_example_with_the_exit_code_its_name_promises(tmp_path: Path) -> None:
    examples = sorted((REPO_ROOT / "examples").glob("*.yml"))
    assert len(examples) >= 3, "issue 3 asks for hello.yml plus two or three more realistic examples"
    for example in examples:
        cwd = tmp_path / example.stem
        cwd.mkdir()
        result = _local(example, cwd)
        want = 1 if "fail" in example.stem else 0
        assert result.returncode == want, (
            f"{example.name} exited {result.returncode}, want {want}:\n{result.stdout}{result.stderr}"
        )


def test_submit_runs_a_task_against_a_running_platform(
    submitter: Submitter, start_worker, tmp_path: Path
) -> None:
    worker = start_worker()
    now = dt.datetime.now(dt.UTC)
    task = {
        "provisionerId": PROVISIONER_ID,
        "workerType": submitter.worker_type,
        "created": iso(now),
        "deadline": iso(now + dt.timedelta(minutes=30)),
        "expires": iso(now + dt.timedelta(days=1)),
        "payload": {"command": [["sh", "-c", "echo submitted-$((2*21))"]], "maxRunTime": 30},
        "metadata": {
            "name": "submit e2e",
            "description": "-",
            "owner": "e2e@example.com",
            "source": "https://example.com",
        },
    }
    task_file = tmp_path / "task.yml"
    task_file.write_text(yaml.safe_dump(task))
    token = submitter.root_token
    result = run_cli(
        "submit",
        str(task_file),
        "--root-url",
        submitter.root_url,
        cwd=tmp_path,
        timeout=120,
        env=clean_env(TASKCLUSTER_CLIENT_ID="static/taskcluster/root", TASKCLUSTER_ACCESS_TOKEN=token),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{out}\n--- worker ---\n{worker.tail()}"
    assert "submitted-42" in out and "completed" in out
    assert token not in out, "the access token must never be printed"
    assert os.path.isdir(tmp_path) and not (tmp_path / ".tcworker").exists(), (
        "submit must not start a platform"
    )
