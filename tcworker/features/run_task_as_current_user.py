"""``features.runTaskAsCurrentUser``: run the commands as the worker's own user (multiuser only).

Needs the scope ``generic-worker:run-task-as-current-user:<provisionerId>/<workerType>`` and the
pool gate ``enableRunTaskAsCurrentUser``, which generic-worker forces off when ``capacity`` > 1
(one task running as root must not see another task's files). The task user is still created;
its name and a fresh password go to ``<taskDir>/task-user-credentials.json`` (0600), whose path
is exported as ``TASK_USER_CREDENTIALS`` (spec/worker.md §2.2, §2.4). The engine does the work
through the sandbox's ``run_as_current_user``; an engine where it is ``Unsupported`` cannot serve the
feature (malformed-payload).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tcworker.engines.base import Unsupported
from tcworker.errors import MalformedPayload
from tcworker.features.base import Feature, RunHandle, TaskFeature, payload_feature_flag
from tcworker.scopes import ScopeExpr

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


class RunTaskAsCurrentUserFeature(Feature):
    name = "runTaskAsCurrentUser"
    config_gate = "enableRunTaskAsCurrentUser"

    def enabled(self, config: WorkerConfig) -> bool:
        return bool(config.enableRunTaskAsCurrentUser) and int(config.capacity) == 1

    def disabled_reason(self, config: WorkerConfig) -> str | None:
        if int(config.capacity) > 1:
            return (
                f"This worker pool runs {config.capacity} tasks at a time (capacity > 1), so "
                "features.runTaskAsCurrentUser is not available on it: a task running as the "
                "worker's user could read or alter the other tasks. Remove the feature from the "
                "task, or use a pool with capacity 1 that enables it."
            )
        return None

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not payload_feature_flag(run.payload, "runTaskAsCurrentUser"):
            return None
        return RunTaskAsCurrentUserTaskFeature(run)


class RunTaskAsCurrentUserTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run

    def required_scopes(self) -> Sequence[ScopeExpr]:
        return [f"generic-worker:run-task-as-current-user:{self.run.task_queue_id}"]

    async def start(self) -> None:
        run = self.run
        try:
            credentials = await run.sandbox.run_as_current_user()
        except Unsupported:
            raise MalformedPayload(
                f"features.runTaskAsCurrentUser is not supported by the {run.engine_name} engine "
                "(only by multiuser)"
            ) from None
        run.feature_env["TASK_USER_CREDENTIALS"] = str(credentials)
        run.log.info("Running task as current user; task user credentials are in " + str(credentials))
