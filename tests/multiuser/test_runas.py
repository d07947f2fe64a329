"""``tcworker.engines.runas``: helpers started as a task user through ``setpriv`` end up with
exactly the ids ``subprocess``'s ``user=`` gives (real, effective and saved; no capabilities),
on uvloop — the worker's loop, whose subprocesses refuse ``user=`` — as on the standard loop."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
import uvloop
from helpers.ci import require_root, require_tool

from tcworker.engines import runas

NOBODY = 65534
STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapPrm", "CapEff")


def _status(text: str) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: " ".join(fields[k].split()) for k in STATUS_FIELDS}


async def _status_through_loop(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


@pytest.mark.parametrize("groups", [(), (5, 6)])
@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_setpriv_gives_the_ids_of_subprocess_user(groups: tuple[int, ...], loop_factory) -> None:
    require_root("switching to another user")
    require_tool("setpriv", "util-linux")
    cat = ["cat", "/proc/self/status"]
    expected = subprocess.run(
        cat, user=NOBODY, group=NOBODY, extra_groups=list(groups), capture_output=True, text=True, check=True
    ).stdout
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        got = runner.run(_status_through_loop(runas.as_user(cat, NOBODY, NOBODY, groups)))
    assert _status(got) == _status(expected)
    assert _status(got)["Uid"] == f"{NOBODY} {NOBODY} {NOBODY} {NOBODY}"  # saved uid dropped too
    assert _status(got)["Groups"] == " ".join(str(g) for g in groups)
    assert _status(got)["CapPrm"] == "0000000000000000"


def test_uvloop_refuses_user_so_the_worker_cannot_fall_back_to_it() -> None:
    """Why ``runas`` exists: if uvloop ever accepts ``user=``, this module may go."""

    async def spawn() -> None:
        await asyncio.create_subprocess_exec("true", user=NOBODY)  # type: ignore[call-arg]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner, pytest.raises(ValueError):
        runner.run(spawn())


def test_a_missing_setpriv_is_a_clear_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runas, "SEARCH_PATH", "/nonexistent")
    with pytest.raises(OSError, match="setpriv"):
        runas.as_user(["true"], NOBODY, NOBODY)
