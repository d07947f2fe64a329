"""The argv that starts a helper process as another user, on whichever event loop runs it.

The worker runs on uvloop (see ``tcworker.worker.commands``), whose subprocess transport refuses
``user=``/``group=``/``extra_groups=`` (``ValueError``), and a ``preexec_fn`` that switches ids is
unsafe in the worker's threaded process. So the few helpers that run as a task user through
``asyncio.create_subprocess_exec`` (artifact copies, the multiuser sweep, interactive shells,
account helpers without the command stub) are started through util-linux's ``setpriv``: it sets
the supplementary groups, the gid and the uid — real, effective and saved, exactly what
``subprocess``'s ``user=`` does, capabilities dropped with them — and then ``exec``s the command
in the same process, so its pid, pipes, signals and exit status are the command's own.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

SEARCH_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class RunAsUnavailable(OSError):
    """``setpriv`` (util-linux) is missing, so nothing can be started as another user."""


def setpriv_program() -> str:
    """Where ``setpriv`` is (looked up on every call: cheap, and a test may remove it)."""
    found = shutil.which("setpriv", path=SEARCH_PATH)
    if found is None:
        raise RunAsUnavailable("setpriv (util-linux) is needed to start commands as the task user")
    return found


def as_user(argv: Sequence[str], uid: int, gid: int, groups: Sequence[int] = ()) -> list[str]:
    """``argv`` prefixed so it runs with ``uid``/``gid`` and exactly ``groups`` as supplementary
    groups (none when empty)."""
    group_option = "--groups=" + ",".join(str(g) for g in groups) if groups else "--clear-groups"
    return [setpriv_program(), f"--reuid={uid}", f"--regid={gid}", group_option, "--", *argv]
