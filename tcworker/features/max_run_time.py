"""The maxRunTime feature: a timer that aborts the run when the payload's time is up.

The timer starts just before the commands (this feature sits right before the command
executor) and is stopped right after them, before artifacts are uploaded. On expiry it logs
``Aborting task...`` and calls ``run.abort(MAX_RUN_TIME)``: the engine kills the whole process
tree and the command executor turns the recorded reason into ``failed`` (spec/worker.md §2.1).
"""

from __future__ import annotations

import asyncio

from tcworker.engines.base import CancelReason
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature


class MaxRunTimeFeature(Feature):
    name = "maxRunTime"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        return MaxRunTimeTaskFeature(run)


class MaxRunTimeTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        seconds = self.run.model.max_run_time
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired, seconds)

    def _expired(self, seconds: int) -> None:
        self.run.log.warn(f"Aborting task - max run time exceeded ({seconds}s)!")
        self.run.log.info("Aborting task...")
        self.run.abort(CancelReason.MAX_RUN_TIME)

    async def stop(self, outcome: RunOutcome) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
