"""Index and purge-cache basics, through the official `taskcluster.Index` / `taskcluster.PurgeCache`."""

from __future__ import annotations

import pytest
import slugid
import taskcluster
from helpers.platformapi import check_schema, claim_task, create_task, rest_error, run_queue
from helpers.platformproc import PlatformProcess
from helpers.polling import wait_for
from helpers.tasks import from_now, new_queue_id, utcnow


def test_insert_and_find_task(pserver: PlatformProcess) -> None:
    index = taskcluster.Index(pserver.options(maxRetries=0))
    namespace = f"tcw.test.{slugid.nice().lower().replace('-', 'x').replace('_', 'y')}"
    task_id = slugid.nice()
    body = {"taskId": task_id, "rank": 3, "data": {"k": "v"}, "expires": from_now(days=1)}
    check_schema(body, "insert-task-request", "index", response=False)
    check_schema(index.insertTask(namespace, body), "indexed-task-response", "index")
    found = check_schema(
        taskcluster.Index(pserver.options(None, maxRetries=0)).findTask(namespace),
        "indexed-task-response",
        "index",
    )
    assert found["taskId"] == task_id and found["namespace"] == namespace and found["data"] == {"k": "v"}
    assert found["rank"] == 3
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        index.findTask(namespace + ".missing")
    rest_error(exc, 404, "ResourceNotFound")


def test_completed_task_indexed_by_route(pserver: PlatformProcess, root_queue: taskcluster.Queue) -> None:
    q = new_queue_id()
    suffix = slugid.nice().lower().replace("-", "x").replace("_", "y")
    path = f"tcw.{suffix}.bar"
    task_id, _ = create_task(root_queue, q, routes=[f"index.{path}"])
    index = taskcluster.Index(pserver.options(maxRetries=0))
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:  # not indexed before it completes
        index.findTask(path)
    rest_error(exc, 404)
    c = claim_task(root_queue, q, task_id)
    run_queue(pserver, c).reportCompleted(task_id, 0)

    def found() -> dict | None:
        try:
            return index.findTask(path)
        except taskcluster.TaskclusterRestFailure:
            return None

    assert wait_for(found, timeout=5, what=f"findTask({path!r})")["taskId"] == task_id


def test_purge_cache_requests(pserver: PlatformProcess) -> None:
    purge = taskcluster.PurgeCache(pserver.options(maxRetries=0))
    pool = new_queue_id()
    before = utcnow()
    purge.purgeCache(pool, {"cacheName": "tcw-cache-1"})
    resp = check_schema(
        purge.purgeRequests(pool, query={"since": taskcluster.stringDate(before)}),
        "purge-cache-request-list",
        "purge-cache",
    )
    assert [(r["cacheName"], f"{r['provisionerId']}/{r['workerType']}") for r in resp["requests"]] == [
        ("tcw-cache-1", pool)
    ]
    assert check_schema(purge.purgeRequests(pool), "purge-cache-request-list", "purge-cache")["requests"]
    later = purge.purgeRequests(pool, query={"since": from_now(minutes=5)})
    assert later["requests"] == []
    other = purge.purgeRequests(new_queue_id())
    assert other["requests"] == []
    anon = taskcluster.PurgeCache(pserver.options(None, maxRetries=0))
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon.purgeCache(pool, {"cacheName": "x"})
    assert f"purge-cache:{pool}:x" in rest_error(exc, 403, "InsufficientScopes")["message"]
