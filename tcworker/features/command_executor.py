"""The command executor: the last feature, runs the payload's commands in the sandbox.

Commands run in order, each in its own process group in the task directory, and the first one
that does not succeed stops the sequence (spec/worker.md §2.1). The engine reports facts
(``ProcessResult``); this module turns them into the run's error, generic-worker style:
non-zero exit → ``failed`` (or ``intermittent-task`` when listed in ``onExitStatus.retry``),
could not start → ``failed``, aborted → by the recorded reason (max run time and the resource
monitor's high memory → ``failed``, worker shutdown → ``worker-shutdown``, cancelled → nothing
reported). A limit the kernel enforced (``taskMaxProcesses``, ``taskMaxMemoryMegabytes``) fails
the task even when the command exited 0 afterwards (``ResourceLimitHit``), with the engine's line
naming the limit. Features that watch each command (``RunHandle.command_watchers``) are called
around it and their lines go into its footer.
"""

from __future__ import annotations

import shlex
import time

from tcworker.durations import go_duration
from tcworker.engines.base import EXIT_ABORTED, ProcessResult
from tcworker.errors import IntermittentTask, ResourceLimitHit, TaskError, TaskFailed, error_for_cancel
from tcworker.features.base import Feature, RunHandle, TaskFeature

LABEL_WIDTH = 32


def error_for_result(
    result: ProcessResult, retry_codes: frozenset[int], cancel_detail: str = ""
) -> TaskError | None:
    """The error a command's result means for the run, or ``None`` when it succeeded."""
    if result.cancel_reason is not None:
        return error_for_cancel(result.cancel_reason, cancel_detail)
    if result.start_error is not None:
        return TaskFailed(result.start_error)
    if result.limit_hits:  # before the exit status: an OOM kill is the cause of a signal 9
        return ResourceLimitHit("; ".join(result.limit_hits))
    if result.exit_code == 0:
        return None
    if result.exit_code in retry_codes:
        return IntermittentTask(
            f"Task appears to have failed intermittently - exit code {result.exit_code} found in task payload.onExitStatus.retry list"
        )
    if result.signal is not None:
        return TaskFailed(f"process killed by signal {result.signal}")
    return TaskFailed(f"exit status {result.exit_code}")


def footer_lines(result: ProcessResult, extra: list[str] | None = None) -> list[str]:
    """generic-worker's command footer; ``extra`` (the resource monitor's memory lines) goes where
    generic-worker puts its usage lines: after the abort line, or between Wall Time and Result."""
    extra = extra or []
    if result.cancel_reason is not None:
        return [
            f"Command ABORTED after {go_duration(result.wall_time)}: process aborted ({result.cancel_reason})",
            *extra,
        ]
    return [
        f"{'Exit Code':>{LABEL_WIDTH}}: {result.exit_code}",
        f"{'User Time':>{LABEL_WIDTH}}: {go_duration(result.user_time)}",
        f"{'Kernel Time':>{LABEL_WIDTH}}: {go_duration(result.system_time)}",
        f"{'Wall Time':>{LABEL_WIDTH}}: {go_duration(result.wall_time)}",
        *extra,
        f"{'Result':>{LABEL_WIDTH}}: {'SUCCEEDED' if result.succeeded else 'FAILED'}",
    ]


class CommandExecutorFeature(Feature):
    name = "commandExecutor"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        return CommandExecutorTaskFeature(run)


class CommandExecutorTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run

    async def start(self) -> None:
        run = self.run
        run.outcome.commands_started = True
        env = run.command_env()
        started = time.monotonic()
        run.log.info("=== Task Starting ===")
        error: TaskError | None = None
        try:
            for i, argv in enumerate(run.model.commands):
                if run.abort_reason is not None:
                    error = error_for_cancel(run.abort_reason, run.cancellation.detail)
                    run.outcome.last_result = ProcessResult(
                        exit_code=EXIT_ABORTED, cancel_reason=run.abort_reason
                    )
                    break
                run.log.info(
                    f"Executing command {i}: {shlex.join(argv) if argv else '(image default command)'}"
                )
                result, usage_lines = await self._execute(argv, env)
                if result.cancel_reason is None and run.abort_reason is not None and not result.succeeded:
                    # Aborted from outside while the process was dying anyway: keep the reason.
                    result = ProcessResult(
                        exit_code=EXIT_ABORTED,
                        cancel_reason=run.abort_reason,
                        wall_time=result.wall_time,
                    )
                run.outcome.last_result = result
                if result.start_error:
                    run.log.error(result.start_error)
                for line in result.limit_hits:
                    run.log.error(line)
                run.log.info("\n".join(footer_lines(result, usage_lines)))  # one write, one timestamp
                error = error_for_result(result, run.model.retry_codes, run.cancellation.detail)
                if error is not None:
                    break
        finally:
            run.log.info(f"=== Task Finished ===\nTask Duration: {go_duration(time.monotonic() - started)}")
        if error is not None:
            raise error

    async def _execute(self, argv: list[str], env: dict[str, str]) -> tuple[ProcessResult, list[str]]:
        """One command in the sandbox, with the run's command watchers around it."""
        watchers = list(self.run.command_watchers)
        for watcher in watchers:
            watcher.command_started()
        lines: list[str] = []
        try:
            result = await self.run.sandbox.execute(argv, env, self.run.log)
        finally:
            for watcher in watchers:
                lines.extend(await watcher.command_finished())
        return result, lines
