"""Issue 9 acceptance 2 (first half): `tcworker submit` follows the live log while the task runs,
falls back to the backing log with a reason, and `tcworker local` fixes (exit codes, disk paths).

`tcworker submit` runs as a real subprocess against the shared platform process, a real
`tcworker run` process works the task; stdout is read as it comes, with arrival times.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import requests
import slugid
import taskcluster.aio
import yaml
from helpers.submitter import Submitter, parse_iso
from helpers.workerproc import PROVISIONER_ID, clean_env, tcworker_cmd
from livehelpers import LINE, numbered_lines

from tcworker.local import build_task
from tcworker.platform.serve import start_platform

LINES = 15
TICKER = f'for k in $(seq 0 {LINES - 1}); do echo "line $k $(date +%s.%N)"; sleep 0.2; done'


def _task_file(tmp_path: Path, submitter: Submitter, command: str) -> Path:
    path = tmp_path / "task.yml"
    path.write_text(yaml.safe_dump({"command": [["sh", "-c", command]], "maxRunTime": 60}), encoding="utf-8")
    return path


def _submit(submitter: Submitter, task_file: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        tcworker_cmd(
            "submit",
            str(task_file),
            "--root-url",
            submitter.root_url,
            "--task-queue-id",
            f"{PROVISIONER_ID}/{submitter.worker_type}",
            *extra,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean_env(
            TASKCLUSTER_CLIENT_ID="static/taskcluster/root", TASKCLUSTER_ACCESS_TOKEN=submitter.root_token
        ),
    )


class TimedLines(threading.Thread):
    """Reads a pipe line by line, keeping each line's arrival time."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: list[tuple[float, bytes]] = []

    def run(self) -> None:
        for line in iter(self.pipe.readline, b""):
            self.lines.append((time.time(), line))

    @property
    def data(self) -> bytes:
        return b"".join(line for _, line in self.lines)


def _task_id(stderr: str) -> str:
    match = re.search(r"Task (\S{22}) created", stderr)
    assert match, f"no task id in:\n{stderr}"
    return match.group(1)


def test_submit_follows_the_live_log_while_the_task_runs(
    submitter: Submitter, start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker()
    proc = _submit(submitter, _task_file(tmp_path, submitter, TICKER))
    reader = TimedLines(proc.stdout)
    reader.start()
    code = proc.wait(120)
    reader.join(10)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, f"{err}\n{reader.data.decode()}\n--- worker ---\n{worker.tail()}"
    task_id = _task_id(err)
    run = submitter.wait_run(task_id)
    resolved = parse_iso(run["resolved"]).timestamp()
    arrivals = {}
    for when, line in reader.lines:
        match = LINE.match(line.rstrip(b"\n"))
        if match:
            arrivals[int(match.group(1))] = (float(match.group(2)), when)
    assert sorted(arrivals) == list(range(LINES))
    late = {k: round(got - printed, 3) for k, (printed, got) in arrivals.items() if got - printed > 1.0}
    assert not late, f"lines later than 1 s at the submitter: {late}"
    assert arrivals[0][1] < resolved - 1.0, "the first line was printed only at the end"
    # Exactly the backing log, once, and the summary after it.
    assert reader.data == submitter.log(task_id).encode()
    assert "completed" in err and "printing the task log" not in err


def test_submit_without_a_live_log_prints_the_backing_log_and_says_why(
    submitter: Submitter, start_worker: Any, tmp_path: Path
) -> None:
    start_worker(enableLiveLog=False)
    proc = _submit(submitter, _task_file(tmp_path, submitter, "echo early; sleep 2; echo late"))
    out, err_bytes = proc.communicate(timeout=120)
    err = err_bytes.decode()
    assert proc.returncode == 0, err
    assert b"early" in out and b"late" in out
    assert "was not available while the task ran" in err and "backing log" in err, err
    task_id = _task_id(err)
    assert out == submitter.log(task_id).encode()


def test_submit_no_follow_prints_the_log_at_the_end(
    submitter: Submitter, start_worker: Any, tmp_path: Path
) -> None:
    start_worker()
    proc = _submit(submitter, _task_file(tmp_path, submitter, TICKER), "--no-follow")
    out, err_bytes = proc.communicate(timeout=120)
    assert proc.returncode == 0, err_bytes.decode()
    assert numbered_lines(out) == list(range(LINES))
    assert out == submitter.log(_task_id(err_bytes.decode())).encode()


def _local(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tcworker_cmd("local", *args),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def test_local_usage_errors_exit_64_and_a_bad_max_run_time_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("command: [[true]]\nmaxRunTime: soon\n")
    result = _local(tmp_path, str(bad))
    assert result.returncode == 64, result.stderr
    assert (
        "maxRunTime must be a whole number of seconds" in result.stderr and "Traceback" not in result.stderr
    )
    assert _local(tmp_path, str(tmp_path / "missing.yml")).returncode == 64
    assert _local(tmp_path, "--no-such-flag", str(bad)).returncode == 64


def test_local_runs_the_asked_task_not_an_older_pending_one(tmp_path: Path) -> None:
    """An interrupted earlier run left a task pending in ./.tcworker: ours still runs, we are told."""

    async def leave_pending() -> None:
        platform = await start_platform(listen="127.0.0.1:0", data_dir=tmp_path / ".tcworker")
        try:
            queue = taskcluster.aio.Queue(
                {"rootUrl": platform.root_url, "credentials": platform.root_credentials}
            )
            old = build_task({"command": [["sh", "-c", "echo OLD-TASK"]], "maxRunTime": 30}, "old.yml")
            await queue.createTask(slugid.nice(), old)
        finally:
            await platform.stop()

    asyncio.run(leave_pending())
    task = tmp_path / "new.yml"
    task.write_text(
        yaml.safe_dump(
            {
                "command": [["sh", "-c", "echo NEW-TASK > out.txt; echo NEW-TASK"]],
                "maxRunTime": 30,
                "artifacts": [{"type": "file", "path": "out.txt", "name": "public/out.txt"}],
            }
        )
    )
    result = _local(tmp_path, str(task))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NEW-TASK" in result.stdout and "OLD-TASK" not in result.stdout
    assert "Older tasks are still pending" in result.stderr, result.stderr
    # No dead URLs: the artifact is saved on disk and its path printed.
    saved = [w for w in result.stderr.split() if w.endswith("public/out.txt") and w.startswith("/")]
    assert saved and Path(saved[0]).read_text() == "NEW-TASK\n", result.stderr
    assert not [line for line in result.stderr.splitlines() if "http://" in line and "created on" not in line]


def test_local_output_order_when_piped_together(tmp_path: Path) -> None:
    task = tmp_path / "t.yml"
    task.write_text(yaml.safe_dump({"command": [["sh", "-c", "echo the-log-line"]], "maxRunTime": 30}))
    result = subprocess.run(
        " ".join(tcworker_cmd("local", str(task))) + " 2>&1 | cat",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(),
    )
    out = result.stdout
    assert out.index("created on") < out.index("the-log-line") < out.index(": completed"), out


def test_local_serve_keeps_the_platform_up_and_prints_its_url(tmp_path: Path) -> None:
    task = tmp_path / "t.yml"
    task.write_text(yaml.safe_dump({"command": [["sh", "-c", "echo served"]], "maxRunTime": 30}))
    proc = subprocess.Popen(
        tcworker_cmd("local", "--serve", str(task)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 120
        while "Serving the platform at" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        match = re.search(r"Serving the platform at (http://\S+)", seen)
        assert match, seen
        root = match.group(1)
        urls = re.findall(r"(http://\S+/artifacts/public/logs/live_backing\.log)", seen)
        assert urls, seen
        body = requests.get(urls[0], timeout=30)  # the platform still answers after the resolution
        assert body.status_code == 200 and "served" in body.text
        assert requests.get(f"{root}/api/queue/v1/ping", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
