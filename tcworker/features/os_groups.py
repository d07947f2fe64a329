"""``payload.osGroups``: OS groups the task's commands may use (spec/worker.md §2.6).

Each group needs the scope ``generic-worker:os-group:<provisionerId>/<workerType>/<group>``
(checked by ``TaskRun`` through ``required_scopes``; a missing one is malformed-payload naming it).
The engine decides what granting means through the sandbox's ``set_os_groups``:
multiuser gives the task user the groups as supplementary groups of every command; simple
(generic-worker's insecure engine) only accepts groups the worker user already has. An engine
whose ``set_os_groups`` is ``Unsupported`` cannot grant groups at all (malformed-payload). Under
``runTaskAsCurrentUser`` the groups are skipped with a log line, as generic-worker does.

The feature is requested only when the payload lists groups, so ``enableOSGroups: false`` does
not make every task malformed (the upstream quirk the spec recommends fixing, §1.8).
"""

from __future__ import annotations

from collections.abc import Sequence

from tcworker.engines.base import Unsupported
from tcworker.errors import MalformedPayload
from tcworker.features.base import Feature, RunHandle, TaskFeature, payload_feature_flag
from tcworker.scopes import ScopeExpr


def go_list(items: Sequence[str]) -> str:
    """A list as Go's ``%v`` prints it (``[a b]``), as in generic-worker's messages."""
    return "[" + " ".join(items) + "]"


class OSGroupsFeature(Feature):
    name = "osGroups"
    config_gate = "enableOSGroups"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        groups = [str(g) for g in run.payload.get("osGroups") or ()]
        return OSGroupsTaskFeature(run, groups) if groups else None


class OSGroupsTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle, groups: list[str]) -> None:
        self.run = run
        self.groups = groups

    def required_scopes(self) -> Sequence[ScopeExpr]:
        return [f"generic-worker:os-group:{self.run.task_queue_id}/{group}" for group in self.groups]

    async def start(self) -> None:
        run = self.run
        if payload_feature_flag(run.payload, "runTaskAsCurrentUser"):
            run.log.info(
                f"Not adding task user to group(s) {go_list(self.groups)} since we are running as current user."
            )
            return
        try:
            await run.sandbox.set_os_groups(self.groups)
        except Unsupported:
            raise MalformedPayload(
                f"task definition contains unsupported osGroups: {go_list(self.groups)}\n"
                f"the {run.engine_name} engine cannot add OS groups to a task"
            ) from None
        except MalformedPayload as e:
            run.log.error(f"[osGroups] {e}")
            raise
        run.log.info(f"[osGroups] Commands run with OS group(s) {go_list(self.groups)}")
