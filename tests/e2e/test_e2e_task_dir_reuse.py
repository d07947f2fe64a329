"""A real worker keeps its runs' emptied directories for the next runs (``tcworker.sparedirs``):
a run must still start in an empty task directory of its own, whatever the run before left there
(files, a tree, its ``generic-worker/`` files, a changed mode), and its log must be its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(120)

LEAVE = (
    "echo old > left.txt && mkdir -p tree/deeper && echo x > tree/deeper/y && "
    "echo s > generic-worker/from-the-task && chmod 777 . && chmod 755 generic-worker && "
    "echo 'first run marker' && stat -c 'inode %i' ."
)
LOOK = "pwd; stat -c 'inode %i' .; stat -c '%a %n' . generic-worker; find . | sort"


def _inode(log: str) -> str:
    return log.split("inode ", 1)[1].split()[0]


def test_a_run_never_sees_what_an_earlier_run_left_in_its_directory(
    tmp_path: Path, submitter: Submitter, start_worker
) -> None:
    tasks_dir = tmp_path / "tasks"
    ids = [submitter.create({"command": [["sh", "-c", LEAVE]], "maxRunTime": 30})]
    ids += [submitter.create({"command": [["sh", "-c", LOOK]], "maxRunTime": 30}) for _ in range(3)]
    worker = start_worker(tasksDir=str(tasks_dir), capacity=1, numberOfTasksToRun=len(ids))
    for task_id in ids:
        assert submitter.wait_run(task_id, worker=worker)["state"] == "completed", worker.tail()
    assert worker.wait(30) == 0, worker.tail()
    inodes = [_inode(submitter.log(task_id)) for task_id in ids]
    if "per-task cgroups: none usable" not in worker.output():  # a run's dir is kept only then
        assert inodes[1] == inodes[0], "the second run got the first run's emptied directory"
    for task_id in ids[1:]:
        log = submitter.log(task_id)
        assert "755 ." in log and "700 generic-worker" in log, log
        listing = log.split("700 generic-worker", 1)[1]
        assert "./generic-worker\n" in listing and "left.txt" not in listing, log
        assert "tree" not in listing and "from-the-task" not in listing, log
        assert "first run marker" not in log, log
    assert not [p.name for p in tasks_dir.iterdir() if p.name.startswith("task_")]
    kept = tasks_dir / ".spare" / "tasks"
    assert kept.is_dir() and 0 < len(os.listdir(kept)) <= 2, "the emptied task dirs were kept (capacity + 1)"
    for spare in kept.iterdir():
        assert os.listdir(spare) == ["generic-worker"] and os.listdir(spare / "generic-worker") == []


def test_a_process_left_behind_never_writes_into_a_later_run_directory(
    tmp_path: Path, submitter: Submitter, start_worker
) -> None:
    """The first run leaves a process that writes in its cwd a second later; the runs after it
    (started at once, looking two seconds later) never find its file."""
    late = "(sleep 1; echo late > late.txt; echo late > generic-worker/late.txt) >/dev/null 2>&1 &"
    ids = [submitter.create({"command": [["sh", "-c", late]], "maxRunTime": 30})]
    look = "sleep 2; find . | sort"
    ids += [submitter.create({"command": [["sh", "-c", look]], "maxRunTime": 30}) for _ in range(2)]
    worker = start_worker(tasksDir=str(tmp_path / "tasks"), capacity=1, numberOfTasksToRun=len(ids))
    for task_id in ids:
        assert submitter.wait_run(task_id, worker=worker)["state"] == "completed", worker.tail()
    assert worker.wait(30) == 0, worker.tail()
    for task_id in ids[1:]:
        assert "late.txt" not in submitter.log(task_id), submitter.log(task_id)
