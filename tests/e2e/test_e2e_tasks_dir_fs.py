"""A worker whose tasksDir, or a platform whose data dir, is on ext4 without a journal says so at
start-up (``tcworker.fsinfo``): there every new file scans the inodes freed in the last seconds,
which costs sustained short tasks throughput (README, "Where to put `tasksDir`"). Real
loop-mounted ext4 file systems; a real worker running a real task, a real platform serving.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.loopfs import loop_ext4
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter

from tcworker.fsinfo import file_system_of

pytestmark = pytest.mark.timeout(120)

HINT = "without a journal"


@pytest.mark.parametrize("journal", [False, True], ids=["no-journal", "journal"])
def test_worker_names_a_tasks_dir_on_ext4_without_a_journal(
    journal: bool, tmp_path: Path, submitter: Submitter, start_worker
) -> None:
    with loop_ext4(tmp_path, journal=journal) as mount_point:
        fs = file_system_of(mount_point)
        assert fs is not None and (fs.kind, fs.mount_point, fs.journal) == ("ext4", str(mount_point), journal)
        task_id = submitter.create({"command": [["true"]], "maxRunTime": 30})
        worker = start_worker(tasksDir=str(mount_point / "tasks"), numberOfTasksToRun=1)
        run = submitter.wait_run(task_id, worker=worker)
        assert run["state"] == "completed", worker.tail()
        assert worker.wait(30) == 0, worker.tail()
    lines = [line for line in worker.output().splitlines() if "tasksDir" in line and HINT in line]
    if journal:
        assert not lines, worker.tail()
    else:
        assert len(lines) == 1, worker.tail()
        assert str(mount_point / "tasks") in lines[0] and fs.device in lines[0]


@pytest.mark.parametrize("journal", [False, True], ids=["no-journal", "journal"])
def test_platform_names_a_data_dir_on_ext4_without_a_journal(journal: bool, tmp_path: Path) -> None:
    with loop_ext4(tmp_path, journal=journal) as mount_point:
        with PlatformProcess(mount_point / "data") as platform:
            platform.queue().ping()
        output = platform.output()
    lines = [line for line in output.splitlines() if "data dir" in line and HINT in line]
    if journal:
        assert not lines, output
    else:
        assert len(lines) == 1, output
        assert str(mount_point / "data") in lines[0]
