"""Issue 15 (multiuser part): task users are made ahead in a pool, in the background, and each is
used by exactly one run, then removed. Real OS users, real processes, real ``tcworker run``
processes for the crash case; run as root (skipped with the reason otherwise, failing under CI)."""

# Blocking checks of the host (passwd, stat) between awaits are deliberate, as in test_isolation.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC240, ASYNC251

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import command_env, make_config, processes_of_uid, run_context, unique_sleep
from helpers.logs import RecordingLog

from tcworker.engines.multiuser import MultiuserEngine
from tcworker.errors import HostBroken

pytestmark = pytest.mark.timeout(240)


def task_users_in(tasks_dir: Path) -> dict[str, pwd.struct_passwd]:
    """``task_*`` users whose home lies in ``tasks_dir``, by name."""
    return {
        e.pw_name: e
        for e in pwd.getpwall()
        if e.pw_name.startswith("task_") and Path(e.pw_dir).parent == tasks_dir
    }


def ready_users(tasks_dir: Path) -> set[str]:
    """Users whose home is finished (the worker's private dir made): what the pool hands out."""
    return {name for name, e in task_users_in(tasks_dir).items() if Path(e.pw_dir, "generic-worker").is_dir()}


async def wait_until(predicate: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def test_pool_users_are_made_ahead_and_never_used_twice(mu_engine: MultiuserEngine) -> None:
    tasks_dir = mu_engine.test_config.tasks_dir
    await wait_until(lambda: len(ready_users(tasks_dir)) == 2, what="the pool to fill (taskUserPoolSize 2)")
    made_ahead = ready_users(tasks_dir)
    for name in made_ahead:  # each waiting home is already the user's own, private task dir
        st = (tasks_dir / name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam(name).pw_uid, 0o700)
    used: list[str] = []
    for _ in range(4):
        box = await mu_engine.prepare(run_context())
        name = box.task_dir.name
        used.append(name)
        assert box.user.name == name and box.task_dir == tasks_dir / name
        log = RecordingLog()
        result = await box.execute(["sh", "-c", "id -un; echo mine > f.txt"], command_env(box), log)
        assert result.exit_code == 0 and log.text.splitlines()[0] == name
        await box.destroy()
        assert not user_exists(name) and not (tasks_dir / name).exists()
    assert set(used[:2]) == made_ahead, "the first runs take the users made before they were claimed"
    assert len(set(used)) == len(used), f"a task user was handed out twice: {used}"
    await wait_until(lambda: len(ready_users(tasks_dir)) == 2, what="the pool to refill")
    assert ready_users(tasks_dir).isdisjoint(used), "a used user came back into the pool"


async def test_more_runs_at_once_than_the_pool_holds_get_distinct_users(mu_engine: MultiuserEngine) -> None:
    boxes = await asyncio.gather(*(mu_engine.prepare(run_context()) for _ in range(5)))
    try:
        uids = {pwd.getpwnam(b.task_dir.name).pw_uid for b in boxes}
        assert len({b.task_dir for b in boxes}) == 5 and len(uids) == 5
    finally:
        await asyncio.gather(*(b.destroy() for b in boxes))
    assert not any(user_exists(b.task_dir.name) for b in boxes)


async def test_a_task_cannot_touch_the_homes_waiting_in_the_pool(mu_engine: MultiuserEngine) -> None:
    """A home made ahead must stay out of reach of the tasks that run before its own: a task
    that could plant a ``.bashrc`` or a binary there would run code as a later task."""
    tasks_dir = mu_engine.test_config.tasks_dir
    box = await mu_engine.prepare(run_context())
    try:
        # the other user made ahead waits (the pool tops up only when this run is over)
        await wait_until(lambda: len(ready_users(tasks_dir) - {box.task_dir.name}) >= 1, what="a waiting user")
        waiting = sorted(ready_users(tasks_dir) - {box.task_dir.name})
        for home in (tasks_dir / name for name in waiting):
            script = (
                f'for t in "ls {home}" "cat {home}/.profile" "touch {home}/.bashrc" "mkdir {home}/bin" '
                f'"ln -s /tmp {home}/link"; do if $t 2>/dev/null; then echo "BREACH: $t"; fi; done; echo done'
            )
            log = RecordingLog()
            result = await box.execute(["sh", "-c", script], command_env(box), log)
            assert result.exit_code == 0 and log.text.strip().endswith("done"), log.text
            assert "BREACH" not in log.text, log.text
            assert not (home / ".bashrc").exists() or (home / ".bashrc").stat().st_uid != box.user.uid
            assert not (home / "bin").exists() and not (home / "link").is_symlink()
    finally:
        await box.destroy()


async def test_shutdown_removes_the_users_never_used(
    scratch_root: Path, worker_files: dict[str, Path]
) -> None:
    config = make_config(scratch_root, "multiuser", taskUserPoolSize=3)
    engine = MultiuserEngine(kill_grace=1.0)
    await engine.initialise(config)
    try:
        await wait_until(lambda: len(ready_users(config.tasks_dir)) == 3, what="a pool of 3")
        waiting = ready_users(config.tasks_dir)
    finally:
        await engine.shutdown()
    assert not any(user_exists(name) for name in waiting)
    assert not any((config.tasks_dir / name).exists() for name in waiting)
    assert task_users_in(config.tasks_dir) == {}


async def test_pool_size_zero_makes_each_user_at_the_claim(
    scratch_root: Path, worker_files: dict[str, Path]
) -> None:
    config = make_config(scratch_root, "multiuser", taskUserPoolSize=0)
    engine = MultiuserEngine(kill_grace=1.0)
    await engine.initialise(config)
    try:
        await asyncio.sleep(0.5)
        assert task_users_in(config.tasks_dir) == {}, "nothing is made ahead with taskUserPoolSize 0"
        box = await engine.prepare(run_context())
        name = box.task_dir.name
        assert user_exists(name)
        await box.destroy()
        assert not user_exists(name)
        await asyncio.sleep(0.5)
        assert task_users_in(config.tasks_dir) == {}
    finally:
        await engine.shutdown()


async def test_run_after_user_creation_failing_fails_the_run_and_leaves_no_user(
    scratch_root: Path, worker_files: dict[str, Path]
) -> None:
    hook = scratch_root / "failing-hook.sh"
    hook.write_text("#!/bin/sh\necho hook-broke >&2\nexit 3\n")
    os.chmod(hook, 0o755)
    config = make_config(scratch_root, "multiuser", runAfterUserCreation=str(hook))
    engine = MultiuserEngine(kill_grace=1.0)
    await engine.initialise(config)
    try:
        with pytest.raises(HostBroken) as caught:
            await asyncio.wait_for(engine.prepare(run_context()), 60)
        assert "runAfterUserCreation" in str(caught.value) and "hook-broke" in str(caught.value)
        # several runs waiting at once each get the failure; none waits forever
        results = await asyncio.wait_for(
            asyncio.gather(*(engine.prepare(run_context()) for _ in range(3)), return_exceptions=True), 120
        )
        assert all(isinstance(r, HostBroken) for r in results), results
        await wait_until(lambda: task_users_in(config.tasks_dir) == {}, what="the failed user's removal")
    finally:
        await engine.shutdown()
    assert task_users_in(config.tasks_dir) == {}


def test_users_left_by_a_killed_worker_are_removed_at_the_next_start(start_host_worker: Any) -> None:
    """``kill -9`` of a worker leaves its pool's users and the user of the task it was running
    (with a process still running as it); the next worker on that tasksDir removes all of them."""
    first, submitter = start_host_worker(taskUserPoolSize=2)
    tasks_dir = Path(first.config["tasksDir"])
    token = unique_sleep()
    task_id = submitter.create({"command": [["sh", "-c", f"id -un; sleep {token}"]], "maxRunTime": 120})
    submitter.wait_running(task_id, worker=first)
    deadline = time.monotonic() + 60
    while len(ready_users(tasks_dir)) < 3:  # the running task's user and a refilled pool of 2
        assert time.monotonic() < deadline, first.tail()
        time.sleep(0.05)
    left = task_users_in(tasks_dir)
    orphans = [uid for uid in {e.pw_uid for e in left.values()} if processes_of_uid(uid)]
    assert len(orphans) == 1, "exactly one of them runs the task"
    first.send(signal.SIGKILL)
    first.wait(10)
    assert set(task_users_in(tasks_dir)) >= set(left), "kill -9 left them behind"

    second, _ = start_host_worker(taskUserPoolSize=2, tasksDir=str(tasks_dir))
    deadline = time.monotonic() + 60
    while set(left) & set(task_users_in(tasks_dir)) or len(ready_users(tasks_dir)) < 2:
        assert time.monotonic() < deadline, second.tail()
        time.sleep(0.1)
    assert not any((tasks_dir / name).exists() for name in left)
    assert processes_of_uid(orphans[0]) == [], "the dead run's process was killed with its user"
    assert set(ready_users(tasks_dir)).isdisjoint(left), "the new pool is made of new users"
    assert second.running, second.tail()


def test_tasks_of_a_worker_never_share_a_user(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(capacity=2, taskUserPoolSize=2)
    tasks_dir = Path(worker.config["tasksDir"])
    ids = [
        submitter.create({"command": [["sh", "-c", "echo USER-IS=$(id -un)"]], "maxRunTime": 60})
        for _ in range(6)
    ]
    names = []
    for task_id in ids:
        run = submitter.wait_run(task_id, worker=worker, timeout=120)
        log = submitter.log(task_id)
        assert run["state"] == "completed", log
        names += [line.split("=", 1)[1] for line in log.splitlines() if line.startswith("USER-IS=")]
    assert len(names) == 6 and len(set(names)) == 6, f"a task user ran more than one task: {names}"
    deadline = time.monotonic() + 30
    while set(names) & set(task_users_in(tasks_dir)):
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.1)
    assert worker.running, worker.tail()


async def test_a_new_home_is_private_from_its_creation(
    scratch_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool makes homes while tasks run: ``useradd`` itself must make the home 0700 (not
    only the worker's chmod afterwards), or a running task could list it in between."""
    from tcworker.engines import taskusers

    monkeypatch.setattr(taskusers.os, "chmod", lambda *args, **kwargs: None)  # no chmod after useradd
    accounts = taskusers.Accounts()
    name = f"task_mode{os.getpid() % 100000}"
    home = scratch_root / name
    user = await accounts.create(name, home)
    try:
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        monkeypatch.undo()
        await accounts.remove(user, "delete")
