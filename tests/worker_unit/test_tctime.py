"""Taskcluster timestamps as JavaScript's ``Date.toJSON()`` writes them, whatever datetime comes in."""

from __future__ import annotations

import datetime as dt

from tcworker import tctime


def test_three_fractional_digits_and_z_for_every_kind_of_datetime() -> None:
    utc = dt.datetime(2026, 12, 3, 6, 45, 35, 723999, tzinfo=dt.UTC)
    assert tctime.to_json(utc) == "2026-12-03T06:45:35.723Z"
    assert tctime.to_json(utc.replace(microsecond=0)) == "2026-12-03T06:45:35.000Z"
    plus_two = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert tctime.to_json(plus_two) == "2026-12-03T06:45:35.723Z"
    assert tctime.to_json(dt.datetime(999, 1, 2, tzinfo=dt.UTC)) == "0999-01-02T00:00:00.000Z"
    naive = dt.datetime(2026, 12, 3, 6, 45, 35)  # local time, as astimezone reads it
    assert tctime.to_json(naive) == tctime.to_json(naive.astimezone(dt.UTC))


def test_round_trip_through_parse() -> None:
    now = tctime.now()
    assert tctime.parse(tctime.to_json(now)) == now
