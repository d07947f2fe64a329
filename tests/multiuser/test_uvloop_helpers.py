"""The multiuser engine on uvloop's event loop: every process it starts as a task user must start.

uvloop's subprocess support has no ``user=``/``group=``/``extra_groups=``; the artifact copier and
the per-command sweep (``kill -9 -1`` as the task user) used to pass them to the loop and failed
there (every multiuser artifact). They start through ``setpriv`` now (``runas``), the commands
through the command stub. Here a whole run — a command leaving a daemon behind, artifacts read
with the task user's rights, destroy — runs on a uvloop loop and on the standard one, with the
real task user, real processes and real files, and leaves no descriptor behind.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from helpers.ci import require_multiuser_host
from helpers.engines import command_env, host_dirs, make_config, processes_of_uid, run_context, unique_sleep
from helpers.logs import RecordingLog

from tcworker.engines.base import ArtifactNotReadable
from tcworker.engines.multiuser import MultiuserEngine

pytestmark = pytest.mark.timeout(180)


async def _a_whole_run(root: Path, staging: Path) -> None:
    engine = MultiuserEngine(kill_grace=1.0)
    await engine.initialise(make_config(root, "multiuser"))
    try:
        box = await engine.prepare(run_context())
        try:
            uid = pwd.getpwnam(box.task_dir.name).pw_uid
            token = unique_sleep()
            script = (
                "mkdir d && echo data > d/readable && echo hidden > mine && chmod 000 mine && "
                f"(setsid nohup sleep {token} >/dev/null 2>&1 &) && echo started"
            )
            log = RecordingLog()
            result = await box.execute(["sh", "-c", script], command_env(box), log)
            assert result.exit_code == 0, log.text
            await box.settle_processes()  # the sweep: kill -9 -1 as the task user
            assert processes_of_uid(uid) == []
            with pytest.raises(ArtifactNotReadable):  # root could read it; the task user cannot
                await box.collect_artifact("mine", "file", staging)
            files = await box.collect_artifact("d", "directory", staging)
            assert [(f.relative_name, f.path.read_bytes()) for f in files] == [("readable", b"data\n")]
            assert files[0].path.stat().st_uid == 0  # the worker's private copy
        finally:
            await box.destroy()
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("runner", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_a_multiuser_run_on_either_event_loop(
    runner: Callable[[Coroutine[Any, Any, None]], None], tmp_path: Path
) -> None:
    require_multiuser_host("the multiuser engine on uvloop")
    runner(asyncio.sleep(0))  # the loop's own first-use descriptors (uvloop keeps two) before counting
    fds_before = len(os.listdir("/proc/self/fd"))
    with host_dirs() as root:
        runner(_a_whole_run(root, tmp_path))
    assert len(os.listdir("/proc/self/fd")) == fds_before
