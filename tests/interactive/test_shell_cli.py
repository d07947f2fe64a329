"""Issue 13 acceptance 2: `tcworker shell TASK_ID` driven through a real PTY (pexpect).

A real platform, a real `tcworker run` (simple engine) and `tcworker shell` as a separate process
on a pseudo-terminal, credentials from the TASKCLUSTER_* variables as a user would set them. It
finds the shell through the private reference artifact, shows a prompt, runs a command typed on
the terminal, follows a terminal resize (SIGWINCH) and ends when the task ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from helpers.platformproc import ROOT_CLIENT_ID
from helpers.submitter import Submitter
from helpers.workerproc import clean_env
from test_interactive_shell import free_port, socket_url_of

pytestmark = pytest.mark.timeout(180)

PROMPT = r"[#$] "  # bash's prompt (set by the host's /etc/bash.bashrc) ends with "# " or "$ "


def test_tcworker_shell_through_a_pty(submitter: Submitter, start_worker: Any, tmp_path: Path) -> None:
    worker = start_worker(interactivePort=free_port())
    task_id = submitter.create(
        {"command": [["sh", "-c", "touch stop-me; while [ -e stop-me ]; do sleep 0.2; done"]],
         "maxRunTime": 300, "features": {"interactive": True},
         "env": {"HOME": str(tmp_path)}}
    )
    socket_url_of(submitter, task_id)  # the task runs and its shell is published
    env = clean_env(
        TASKCLUSTER_ROOT_URL=submitter.root_url,
        TASKCLUSTER_CLIENT_ID=ROOT_CLIENT_ID,
        TASKCLUSTER_ACCESS_TOKEN=submitter.root_token,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    )
    child = pexpect.spawn(
        sys.executable, ["-m", "tcworker", "shell", task_id], env=env, timeout=30, dimensions=(24, 80)
    )
    try:
        child.expect(PROMPT)
        child.sendline('echo "in $TASK_ID: $((6*7))"; stty size')
        child.expect_exact(f"in {task_id}: 42")
        child.expect_exact("24 80")
        child.setwinsize(33, 111)  # SIGWINCH → resize message → the remote PTY's size
        child.expect(PROMPT)
        child.sendline("stty size; rm stop-me")  # the task ends: the session ends
        child.expect_exact("33 111")
        child.expect_exact("[tcworker shell] the session ended")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
