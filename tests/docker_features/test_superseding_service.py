"""fetch_supersedes against a real superseder HTTP service on 127.0.0.1 (no queue needed)."""

from __future__ import annotations

import time

import slugid
from helpers.logs import LineLog
from helpers.superseding import Superseder

from tcworker.features.superseding import MAX_SUPERSEDES, Superseding, fetch_supersedes
from tcworker.tcapi.clients import Clients


async def test_list_is_returned_and_task_id_sent(superseder: Superseder) -> None:
    a, b, c = slugid.nice(), slugid.nice(), slugid.nice()
    superseder.lists["key"] = [a, b, c]
    assert await fetch_supersedes(superseder.url("key"), b) == [a, b, c]
    assert superseder.requests == [("key", {"taskId": b})]


async def test_existing_query_is_kept(superseder: Superseder) -> None:
    a = slugid.nice()
    superseder.lists["key"] = [a]
    assert await fetch_supersedes(superseder.url("key") + "?branch=main", a) == [a]
    assert superseder.requests == [("key", {"branch": "main", "taskId": a})]


async def test_entries_that_are_not_task_ids_are_dropped_and_duplicates_merged(
    superseder: Superseder,
) -> None:
    a, b = slugid.nice(), slugid.nice()
    superseder.lists["key"] = [a, "../../etc/passwd", 17, None, b, a]
    assert await fetch_supersedes(superseder.url("key"), a) == [a, b]


async def test_service_errors_are_warnings_and_empty_lists(superseder: Superseder) -> None:
    tid = slugid.nice()
    for key, expect in [
        ("status500", "HTTP 500"),
        ("notjson", "did not answer JSON"),
        ("nolist", 'without a "supersedes" list'),
    ]:
        log = LineLog()
        assert await fetch_supersedes(superseder.url(key), tid, log=log) == []
        assert log.lines and log.lines[0][0] == "warn" and expect in log.lines[0][1], log.text()
        assert "running this task normally" in log.text()


async def test_timeout(superseder: Superseder) -> None:
    log = LineLog()
    start = time.monotonic()
    assert await fetch_supersedes(superseder.url("slow"), slugid.nice(), timeout=0.3, log=log) == []
    assert time.monotonic() - start < 1.5
    assert "could not be reached" in log.text()


async def test_too_long_and_too_big_answers(superseder: Superseder) -> None:
    superseder.lists["many"] = [slugid.nice() for _ in range(MAX_SUPERSEDES + 1)]
    log = LineLog()
    assert await fetch_supersedes(superseder.url("many"), slugid.nice(), log=log) == []
    assert f"more than {MAX_SUPERSEDES}" in log.text()
    superseder.raw_body = b'{"supersedes": ["' + b"x" * (2 << 20) + b'"]}'
    log = LineLog()
    assert await fetch_supersedes(superseder.url("raw"), slugid.nice(), log=log) == []
    assert "more than" in log.text()


async def test_unreachable_service() -> None:
    log = LineLog()
    # Port 9 (discard) on localhost is closed here; the connection is refused at once.
    assert await fetch_supersedes("http://127.0.0.1:9/x", slugid.nice(), log=log) == []
    assert "could not be reached" in log.text()


async def test_bad_urls_are_refused_without_a_request(superseder: Superseder) -> None:
    for url in [
        "ftp://127.0.0.1/x",
        superseder.url("key") + "/é",
        "javascript:alert(1)",
        superseder.url("a\nb"),
    ]:
        log = LineLog()
        assert await fetch_supersedes(url, slugid.nice(), log=log) == []
        assert "not an http(s) URL" in log.text()
    assert superseder.requests == []


async def test_plan_without_superseder_url_is_the_claim_itself() -> None:
    claim = {"status": {"taskId": slugid.nice()}, "runId": 0, "task": {"payload": {"image": "x"}}}
    sup = Superseding(Clients("http://127.0.0.1:1", {}), "wg", "wid")
    plan = await sup.plan(claim)
    assert plan.primary == claim and not plan.superseding and plan.notes == []
    await sup.finish(plan, True)
