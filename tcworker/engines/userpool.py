"""Task users made ahead of time: the multiuser engine's pool (issue 15).

``useradd`` and ``userdel`` cost tens of milliseconds of CPU each (they rewrite ``/etc/passwd``,
``shadow``, ``group`` and ``gshadow`` under a lock and copy ``/etc/skel``), far more than the rest
of a trivial task's run. Creating the user when the task is claimed puts that on every task's
critical path, so the pool keeps ``size`` fresh users ready, created in the background, each with
its home (the future task directory, 0700) already made and owned by it. Because a user is made
before its task is known, its name is not derived from the taskId: ``task_`` + 15 random
characters, which is also how generic-worker names users it prepares ahead (``task_<time>``).

Every user is handed out once (``take``) and never goes back: ``retire`` removes it with its
files, as every task user always was. The pool is topped up when a run gives its user back
(``retire``, after the run's report), not when it takes one: a ``useradd`` started at ``take``
would compete for the CPU and the disk with the run that just began (on a 2-core machine it
added ~10 ms to the start of a trivial task). Only taking the last ready user refills at once,
so that a second run claimed meanwhile does not wait. The pool owns a name from the moment it is chosen (before
``useradd`` creates the home) until the user and home are gone, so ``owns`` tells the worker's
task-directory purge, from any thread, which ``task_*`` directories it must leave alone. When the
pool is empty (more claims at once than ``size``) ``take`` waits for the filler, which then makes
one user per waiter. A failure of the filler (``useradd`` broken, ``runAfterUserCreation``
failing) stops the filling and is raised by the next ``take``, so the run that needed the user
fails as it did when users were created at claim time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import string
from collections.abc import Awaitable, Callable
from pathlib import Path

from tcworker.engines.taskusers import Accounts, TaskUser, lookup

log = logging.getLogger(__name__)

NAME_PREFIX = "task_"
NAME_ALPHABET = string.ascii_lowercase + string.digits
NAME_LENGTH = 20  # generic-worker's limit for task user names (Windows' account name limit)
MAX_NAME_TRIES = 20

MakeReady = Callable[[TaskUser], Awaitable[None]]


def random_task_user_name() -> str:
    """``task_`` + random lowercase letters and digits, 20 characters in all."""
    tail = "".join(secrets.choice(NAME_ALPHABET) for _ in range(NAME_LENGTH - len(NAME_PREFIX)))
    return NAME_PREFIX + tail


class TaskUserPool:
    """Keeps ``size`` fresh task users (and their homes in ``tasks_dir``) ready for ``take``.

    ``make_ready`` finishes a new user before it joins the pool (the engine creates the worker's
    private ``generic-worker/`` directory and runs ``runAfterUserCreation``); when it raises, the
    user is removed again. ``home_action`` is what ``retire`` does with the home by default.
    """

    def __init__(
        self, accounts: Accounts, tasks_dir: Path, size: int, make_ready: MakeReady | None = None
    ) -> None:
        self._accounts = accounts
        self._tasks_dir = tasks_dir
        self._size = max(0, size)
        self._make_ready = make_ready
        self._ready: collections.deque[TaskUser] = collections.deque()
        self._owned: set[str] = set()  # chosen, ready, handed out or being removed
        self._waiters = 0
        self._failure: BaseException | None = None
        self._changed = asyncio.Condition()
        self._filler: asyncio.Task[None] | None = None
        self._closed = False

    # ---- what the engine asks -----------------------------------------------------------------
    def owns(self, name: str) -> bool:
        """Whether ``name`` is a user (and task directory) of this pool, in any state.
        Thread-safe: one set membership test."""
        return name in self._owned

    @property
    def accounts(self) -> Accounts:
        """The account tools the pool creates and removes users with (``chpasswd`` too)."""
        return self._accounts

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def start(self) -> None:
        """Start filling in the background (idempotent)."""
        self._kick()

    async def take(self) -> TaskUser:
        """A user nobody has used, for one run; raises what made the filler fail."""
        if self._closed:
            raise RuntimeError("the task user pool is closed")
        if self._ready:
            user = self._ready.popleft()
            if not self._ready:  # ran dry: refill now (else when this run is over, ``retire``)
                self._kick()
            return user
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._kick()
            raise failure
        self._waiters += 1
        try:
            self._kick()
            async with self._changed:
                await self._changed.wait_for(
                    lambda: bool(self._ready) or self._failure is not None or self._closed
                )
                if self._ready:
                    user = self._ready.popleft()
                    self._kick()
                    return user
                if self._closed:
                    raise RuntimeError("the task user pool is closed")
                failure, self._failure = self._failure, None
                assert failure is not None
                self._kick()  # other waiters get a fresh attempt instead of waiting forever
                raise failure
        finally:
            self._waiters -= 1

    async def retire(self, user: TaskUser, home_action: str) -> list[str]:
        """Remove a user handed out by ``take`` (or a never-used one) with its files; the name is
        released only once everything is gone. Returns the problems (never raises).
        Tops the pool up first (its ``useradd`` goes before this ``userdel``)."""
        self._kick()
        try:
            return await self._accounts.remove(user, home_action)
        finally:
            self._owned.discard(user.name)

    async def close(self) -> None:
        """Stop filling and remove the users that were never handed out. A ``useradd`` under
        way is let finish (killing it could leave ``/etc/passwd`` locked) and that user removed."""
        self._closed = True
        if self._filler is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._filler)
        async with self._changed:
            self._changed.notify_all()
        unused = list(self._ready)
        self._ready.clear()
        for user in unused:
            await self.retire(user, "delete")

    # ---- filling --------------------------------------------------------------------------------
    def _wanted(self) -> int:
        return self._size + self._waiters - len(self._ready)

    def _kick(self) -> None:
        if self._closed or self._failure is not None or self._wanted() <= 0:
            return
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill(), name="task user pool filler")

    async def _fill(self) -> None:
        while not self._closed and self._wanted() > 0:
            try:
                user = await self._create()
            except Exception as e:  # surfaced by the next take(), filling pauses until then
                log.error("cannot prepare a task user for the pool: %s", e)
                self._failure = e
            else:
                self._ready.append(user)
            async with self._changed:
                self._changed.notify_all()
            if self._failure is not None:
                return

    async def _create(self) -> TaskUser:
        name = self._fresh_name()
        self._owned.add(name)  # before the home exists: the purge must never see it unowned
        user: TaskUser | None = None
        try:
            user = await self._accounts.create(name, self._tasks_dir / name)
            if self._make_ready is not None:
                await self._make_ready(user)
        except asyncio.CancelledError:
            # The event loop is going away (``close`` never cancels): no subprocess can be run
            # now; a user made this far is a stale user for the next start-up's sweep.
            raise
        except Exception:
            leftover = user or lookup(name)  # useradd may have made the account before failing
            if leftover is not None:
                await self.retire(leftover, "delete")
            else:
                self._owned.discard(name)
            raise
        return user

    def _fresh_name(self) -> str:
        for _ in range(MAX_NAME_TRIES):
            name = random_task_user_name()
            home = self._tasks_dir / name
            if (
                name not in self._owned
                and lookup(name) is None
                and not home.exists()
                and not home.is_symlink()
            ):
                return name
        raise RuntimeError(f"no free task user name after {MAX_NAME_TRIES} random tries")
