"""Issue 4, acceptance 1, through the whole system: a real `tcworker run --config` process with
`engine: multiuser` and capacity 2, against the real platform process, tasks submitted with the
official client. The tasks try every forbidden thing; each attempt fails, the worker stays
healthy, and no task user, process or temporary file is left afterwards."""

from __future__ import annotations

import json
import pwd
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.submitter import Submitter
from helpers.taskprocs import marked_processes
from helpers.workerproc import WorkerProcess, new_signing_key, run_cli, worker_config

pytestmark = pytest.mark.timeout(180)

ATTEMPTS = {
    "read-config": 'cat "$WORKER_CONFIG"',
    "read-key": 'cat "$WORKER_KEY"',
    "read-environ": 'cat "/proc/$WORKER_PID/environ"',
    "signal-worker": 'kill -TERM "$WORKER_PID"',
    "write-etc": 'touch "/etc/tcw-h4-e2e-$TASK_ID"',
    "read-other-home": 'cat "$OTHER_HOME/secret.txt"',
    "list-other-home": 'ls "$OTHER_HOME"',
}


def attempt_command(name: str, script: str) -> list[str]:
    """One command per attempt that always exits 0 and says whether the attempt worked."""
    return [
        "sh",
        "-c",
        f"if ( {script} ) >/dev/null 2>&1; then echo BREACH:{name}; else echo denied:{name}; fi",
    ]


@pytest.fixture
def mu_worker(start_host_worker: Any) -> tuple[WorkerProcess, Submitter]:
    return start_host_worker(
        engine="multiuser", capacity=2, env={"TCW_WORKER_SECRET": "worker-env-secret-h4"}
    )


@pytest.fixture
def host_root_dir(scratch_root: Path) -> Path:
    path = scratch_root / "refuse"
    path.mkdir(mode=0o755)
    return path


def task_users_in(tasks_dir: Path) -> list[str]:
    return [
        e.pw_name
        for e in pwd.getpwall()
        if e.pw_name.startswith("task_") and e.pw_dir.startswith(f"{tasks_dir}/")
    ]


def test_tasks_cannot_reach_the_worker_or_each_other_and_leave_nothing(
    mu_worker: tuple[WorkerProcess, Submitter],
) -> None:
    worker, submitter = mu_worker
    tasks_dir = Path(worker.config["tasksDir"])
    # Task B: keeps a secret in its home while task A runs, until the test drops a flag file.
    # (Task users come from a pool made ahead, so the victim says where its home is.)
    flag = Path(f"/tmp/tcw-h4-e2e-flag-{submitter.mark}")
    victim_home_file = Path(f"/tmp/tcw-h4-e2e-victim-home-{submitter.mark}")
    victim = submitter.create(
        {
            "command": [
                [
                    "sh",
                    "-c",
                    f'echo victim-secret > secret.txt; echo "$HOME" > {victim_home_file}; '
                    f"until [ -e {flag} ]; do sleep 0.05; done",
                ]
            ],
            "maxRunTime": 120,
        }
    )
    submitter.wait_running(victim, worker=worker)
    deadline = time.monotonic() + 30
    while not victim_home_file.exists() or not victim_home_file.read_text().endswith("\n"):
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.05)
    other_home = Path(victim_home_file.read_text().strip())
    assert other_home.parent == tasks_dir and (other_home / "secret.txt").exists()
    victim_user = other_home.name
    # Task A: every forbidden thing, then a daemon and temp files left behind on purpose.
    daemon = (
        "python3 -c 'import os,sys,time\nif os.fork(): sys.exit(0)\nos.setsid()\n"
        "if os.fork(): sys.exit(0)\nos.closerange(0, 3)\ntime.sleep(600)'"
    )
    commands = [attempt_command(name, script) for name, script in ATTEMPTS.items()]
    commands += [
        ["sh", "-c", "env; echo $$ > /tmp/tcw-h4-e2e-$TASK_ID; echo x > /dev/shm/tcw-h4-e2e-$TASK_ID"],
        ["sh", "-c", daemon + " && (setsid nohup sleep 600 >/dev/null 2>&1 &) && echo daemons-started"],
    ]
    attacker = submitter.create(
        {
            "command": commands,
            "maxRunTime": 120,
            "env": {
                "WORKER_CONFIG": str(worker.config_path),
                "WORKER_KEY": worker.config["ed25519SigningKeyLocation"],
                "WORKER_PID": str(worker.pid),
                "OTHER_HOME": str(other_home),
            },
        }
    )
    run = submitter.wait_run(attacker, worker=worker, timeout=90)
    log = submitter.log(attacker)
    assert run["state"] == "completed", log
    lines = log.splitlines()  # (the command lines themselves are echoed too: match whole lines)
    for name in ATTEMPTS:
        assert f"denied:{name}" in lines, log
    assert [line for line in lines if line.startswith("BREACH:")] == []
    assert "worker-env-secret-h4" not in log and "TCW_WORKER_SECRET" not in log
    assert worker.config["accessToken"] not in log
    assert "daemons-started" in lines
    attacker_home = Path(next(line[5:] for line in lines if line.startswith("HOME=")))
    attacker_user = next(line[5:] for line in lines if line.startswith("USER="))
    assert attacker_home.parent == tasks_dir and attacker_home.name == attacker_user != victim_user
    assert not Path(f"/etc/tcw-h4-e2e-{attacker}").exists()

    # The victim's secret was never exposed; let it finish.
    flag.touch()
    try:
        assert submitter.wait_run(victim, worker=worker, timeout=60)["state"] == "completed"
    finally:
        flag.unlink()

    # Nothing of either task is left: processes, users, homes, temp files. (Only the pool's
    # never-used users, at most taskUserPoolSize of them, remain in tasksDir.)
    ours = {victim_user, attacker_user}
    deadline = time.monotonic() + 20
    while (marked_processes(submitter.mark) or ours & set(task_users_in(tasks_dir))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(submitter.mark) == []
    assert ours.isdisjoint(task_users_in(tasks_dir))
    assert len(task_users_in(tasks_dir)) <= 2
    assert not attacker_home.exists() and not other_home.exists()
    assert not Path(f"/tmp/tcw-h4-e2e-{attacker}").exists()
    assert not Path(f"/dev/shm/tcw-h4-e2e-{attacker}").exists()

    # The worker is healthy: still running and still serving tasks.
    assert worker.running, worker.tail()
    after = submitter.create({"command": [["sh", "-c", "id -u; echo still-serving"]], "maxRunTime": 60})
    assert submitter.wait_run(after, worker=worker)["state"] == "completed"
    assert "still-serving" in submitter.log(after)
    assert worker.running


def test_symlinks_to_secrets_are_published_as_error_artifacts(
    mu_worker: tuple[WorkerProcess, Submitter],
) -> None:
    worker, submitter = mu_worker
    key = worker.config["ed25519SigningKeyLocation"]
    payload: dict[str, Any] = {
        "command": [
            ["sh", "-c", f"ln -s /etc/shadow shadow.txt && ln -s {key} key.txt && echo fine > ok.txt"],
        ],
        "maxRunTime": 60,
        "artifacts": [
            {"type": "file", "path": "shadow.txt", "name": "public/shadow.txt"},
            {"type": "file", "path": "key.txt", "name": "public/key.txt"},
            {"type": "file", "path": "ok.txt", "name": "public/ok.txt"},
        ],
    }
    task_id = submitter.create(payload)
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    assert run["state"] == "failed", submitter.log(task_id)
    arts = submitter.artifacts(task_id, 0)
    for name in ("public/shadow.txt", "public/key.txt"):
        assert arts[name]["storageType"] == "error", arts[name]
    data, _ = submitter.download(task_id, 0, "public/ok.txt")
    assert data == b"fine\n"
    key_bytes = Path(key).read_bytes()
    for name in ("public/shadow.txt", "public/key.txt"):
        with pytest.raises(Exception):  # noqa: B017 - an error artifact has no content to download
            submitter.download(task_id, 0, name)
    assert key_bytes not in submitter.log(task_id).encode()
    assert worker.running


def test_worker_refuses_to_start_with_a_readable_signing_key(host_root_dir: Path) -> None:
    key = new_signing_key(host_root_dir / "ed25519.key")
    key.chmod(0o644)
    config_file = host_root_dir / "worker.config"
    config = worker_config(
        "http://127.0.0.1:9", "not-used", host_root_dir, key, engine="multiuser", workerType="wt"
    )
    config_file.write_text(json.dumps(config))
    config_file.chmod(0o644)
    result = run_cli("run", "--config", str(config_file), cwd=host_root_dir)
    assert result.returncode == 82, result.stderr
    assert "readable by other users" in result.stderr and str(key) in result.stderr
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600  # the token-bearing config was locked down first
