"""The one run state and the one place that decides a resolution (issue 8): ``Cancellation`` and
``errors.resolution_of``."""

from __future__ import annotations

import pytest

from tcworker.cancellation import Cancellation, CancelReason
from tcworker.errors import (
    InternalError,
    MalformedPayload,
    TaskCancelled,
    TaskFailed,
    WorkerShutdown,
    error_for_cancel,
    resolution_of,
)


def test_first_cancel_reason_wins_and_listeners_hear_it_once() -> None:
    state = Cancellation()
    heard: list[CancelReason] = []
    state.on_cancel(heard.append)
    assert state.cancel(CancelReason.MAX_RUN_TIME) is True
    assert state.cancel(CancelReason.WORKER_STOPPING) is False
    assert state.reason is CancelReason.MAX_RUN_TIME and heard == [CancelReason.MAX_RUN_TIME]


def test_a_listener_added_after_cancellation_is_told_at_once() -> None:
    state = Cancellation()
    state.cancel(CancelReason.CLAIM_LOST, "deadline-exceeded")
    heard: list[CancelReason] = []
    state.on_cancel(heard.append)
    assert heard == [CancelReason.CLAIM_LOST] and state.detail == "deadline-exceeded"


def test_a_broken_listener_does_not_keep_the_others_from_stopping() -> None:
    state = Cancellation()
    heard: list[CancelReason] = []

    def broken(reason: CancelReason) -> None:
        raise RuntimeError("boom")

    state.on_cancel(broken)
    state.on_cancel(heard.append)
    state.cancel(CancelReason.CANCELLED)
    assert heard == [CancelReason.CANCELLED]


@pytest.mark.parametrize(
    ("errors", "cancelled", "expected"),
    [
        ([], None, ("completed", None)),
        ([TaskFailed("x")], None, ("failed", None)),
        ([MalformedPayload("x"), TaskFailed("y")], None, ("exception", "malformed-payload")),
        ([TaskFailed("x"), WorkerShutdown("y")], None, ("exception", "worker-shutdown")),
        ([ValueError("bug")], None, ("exception", "internal-error")),
        ([], CancelReason.MAX_RUN_TIME, ("failed", None)),
        ([MalformedPayload("x")], CancelReason.MAX_RUN_TIME, ("exception", "malformed-payload")),
        ([], CancelReason.WORKER_STOPPING, ("exception", "worker-shutdown")),
        ([TaskFailed("x")], CancelReason.WORKER_STOPPING, ("exception", "worker-shutdown")),
        ([], CancelReason.CANCELLED, ("none", None)),
        ([InternalError("x")], CancelReason.CLAIM_LOST, ("none", None)),
        ([TaskCancelled("409")], None, ("none", None)),
    ],
)
def test_resolution_of_errors_and_the_recorded_reason(
    errors: list[BaseException], cancelled: CancelReason | None, expected: tuple[str, str | None]
) -> None:
    assert resolution_of(errors, cancelled) == expected


def test_each_cancel_reason_maps_to_its_error() -> None:
    assert isinstance(error_for_cancel(CancelReason.MAX_RUN_TIME), TaskFailed)
    assert isinstance(error_for_cancel(CancelReason.WORKER_STOPPING), WorkerShutdown)
    assert isinstance(error_for_cancel(CancelReason.CANCELLED), TaskCancelled)
    assert isinstance(error_for_cancel(CancelReason.CLAIM_LOST), TaskCancelled)
    assert "max run time exceeded" in str(error_for_cancel(CancelReason.MAX_RUN_TIME))
