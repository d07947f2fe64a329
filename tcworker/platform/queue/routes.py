"""Queue API methods (spec §2.5): each declared once with route, scopes and input schema.

Handlers are thin: look up what the scope template needs, ``call.authorize(...)``, call the
service, shape the answer. The table of routes mirrors ``api-references/queue-v1-api.json``.
"""

from __future__ import annotations

from typing import Any

from tcworker.platform.api import Call, Endpoint
from tcworker.platform.clock import now_ms
from tcworker.platform.objects.service import ObjectService
from tcworker.platform.queue import artifact_routes
from tcworker.platform.queue.artifacts import ArtifactService
from tcworker.platform.queue.listings import Listings
from tcworker.platform.queue.service import QueueService, resolve_task_queue
from tcworker.platform.store.models import PRIORITIES


def _by(verb: str) -> dict[str, Any]:
    return {
        "AnyOf": [
            f"queue:{verb}:<schedulerId>/<taskGroupId>/<taskId>",
            f"queue:{verb}-in-project:<projectId>",
            {"AllOf": [f"queue:{verb}", "assume:scheduler-id:<schedulerId>/<taskGroupId>"]},
        ]
    }


def endpoints(
    queue: QueueService, artifacts: ArtifactService, objects: ObjectService, listings: Listings
) -> list[Endpoint]:
    """Every queue method, bound to the services."""

    async def task_vars(call: Call) -> Any:
        task = await queue.get(call.params["taskId"])
        d = task.definition
        return task, {
            "schedulerId": d["schedulerId"],
            "taskGroupId": d["taskGroupId"],
            "projectId": d["projectId"],
        }

    async def create_task(call: Call) -> Any:
        d = call.payload
        resolve_task_queue(d)
        d.setdefault("taskGroupId", call.params["taskId"])
        call.authorize(
            scopes=d["scopes"],
            routes=d["routes"],
            projectId=d["projectId"],
            schedulerId=d["schedulerId"],
            provisionerId=d["provisionerId"],
            workerType=d["workerType"],
            priorities=PRIORITIES[: PRIORITIES.index(d["priority"]) + 1],
        )
        task = await queue.create_task(call.params["taskId"], d)
        return {"status": task.status()}

    async def get_task(call: Call) -> Any:
        return (await queue.get(call.params["taskId"])).definition

    async def status(call: Call) -> Any:
        return {"status": await queue.status(call.params["taskId"])}

    def lifecycle(action: str) -> Any:
        async def handler(call: Call) -> Any:
            task, extra = await task_vars(call)
            call.authorize(**extra)
            method = {"schedule": queue.schedule, "cancel": queue.cancel, "rerun": queue.rerun}[action]
            return {"status": (await method(task)).status()}

        return handler

    async def claim_work(call: Call) -> Any:
        p = call.payload
        call.authorize(workerGroup=p["workerGroup"], workerId=p["workerId"])
        transport = call.request.transport
        claimed = await queue.claim_work(
            call.params["taskQueueId"],
            (p["workerGroup"], p["workerId"]),
            p["tasks"],
            lambda: transport is not None and not transport.is_closing(),
        )
        return {"tasks": [queue.claim_answer(t) for t in claimed]}

    async def claim_task(call: Call) -> Any:
        task = await queue.get(call.params["taskId"])
        p = call.payload
        d = task.definition
        call.authorize(
            provisionerId=d["provisionerId"],
            workerType=d["workerType"],
            workerGroup=p["workerGroup"],
            workerId=p["workerId"],
        )
        task = await queue.claim_task(
            task.task_id, int(call.params["runId"]), (p["workerGroup"], p["workerId"])
        )
        return queue.claim_answer(task)

    async def reclaim(call: Call) -> Any:
        run_id = int(call.params["runId"])
        task, creds = await queue.reclaim(call.params["taskId"], run_id, call.authorize)
        return queue.run_answer(task, run_id, creds)

    def resolution(event: str) -> Any:
        async def handler(call: Call) -> Any:
            reason = call.payload["reason"] if event == "exception" else None
            task = await queue.resolve(
                call.params["taskId"], int(call.params["runId"]), event, reason, call.authorize
            )
            return {"status": task.status()}

        return handler

    async def pending(call: Call) -> Any:
        counts = await listings.counts(call.params["taskQueueId"])
        counts.pop("claimedTasks")
        return counts

    async def queue_counts(call: Call) -> Any:
        return await listings.counts(call.params["taskQueueId"])

    async def list_group(call: Call) -> Any:
        return await listings.list_task_group(call.params["taskGroupId"], call.continuation(), call.limit())

    async def get_group(call: Call) -> Any:
        return await listings.task_group(call.params["taskGroupId"])

    async def seal_group(call: Call) -> Any:
        call.authorize(schedulerId=await listings.group_scheduler(call.params["taskGroupId"]))
        return await listings.seal(call.params["taskGroupId"])

    async def cancel_group(call: Call) -> Any:
        group_id = call.params["taskGroupId"]
        call.authorize(schedulerId=await listings.group_scheduler(group_id))
        size, ids = await listings.unresolved_in_sealed_group(group_id)
        cancelled = []
        for task_id in ids:
            task = await queue.get(task_id)
            if task.state in ("unscheduled", "pending", "running") and task.deadline_ms > now_ms():
                await queue.cancel(task)
                cancelled.append(task_id)
        return {
            "taskGroupId": group_id,
            "taskGroupSize": size,
            "cancelledCount": len(cancelled),
            "taskIds": cancelled,
        }

    async def dependents(call: Call) -> Any:
        return await listings.dependents(call.params["taskId"], call.continuation(), call.limit())

    def batch(kind: str) -> Any:
        async def handler(call: Call) -> Any:
            ids = call.payload["taskIds"]
            call.authorize(taskIds=ids)
            found = await listings.many(ids)
            if kind == "tasks":
                return {"tasks": [{"taskId": i, "task": found[i].definition} for i in ids if i in found]}
            return {"statuses": [{"taskId": i, "status": found[i].status()} for i in ids if i in found]}

        return handler

    run = "/task/<taskId>/runs/<runId>"
    tq = frozenset({"taskQueueId"})
    return [
        *artifact_routes.endpoints(artifacts, objects),
        Endpoint(
            "createTask",
            "PUT",
            "/task/<taskId>",
            {
                "AllOf": [
                    {"for": "scope", "in": "scopes", "each": "<scope>"},
                    {"for": "route", "in": "routes", "each": "queue:route:<route>"},
                    "queue:create-task:project:<projectId>",
                    "queue:scheduler-id:<schedulerId>",
                    {
                        "AnyOf": [
                            {
                                "for": "priority",
                                "in": "priorities",
                                "each": "queue:create-task:<priority>:<provisionerId>/<workerType>",
                            }
                        ]
                    },
                ]
            },
            create_task,
            input="queue/create-task-request.json",
        ),
        Endpoint("task", "GET", "/task/<taskId>", "queue:get-task:<taskId>", get_task),
        Endpoint("status", "GET", "/task/<taskId>/status", "queue:status:<taskId>", status),
        Endpoint(
            "tasks",
            "POST",
            "/tasks",
            {"AllOf": [{"for": "taskId", "in": "taskIds", "each": "queue:get-task:<taskId>"}]},
            batch("tasks"),
            input="queue/tasks-request.json",
        ),
        Endpoint(
            "statuses",
            "POST",
            "/tasks/status",
            {"AllOf": [{"for": "taskId", "in": "taskIds", "each": "queue:status:<taskId>"}]},
            batch("statuses"),
            input="queue/tasks-request.json",
        ),
        Endpoint(
            "scheduleTask", "POST", "/task/<taskId>/schedule", _by("schedule-task"), lifecycle("schedule")
        ),
        Endpoint("rerunTask", "POST", "/task/<taskId>/rerun", _by("rerun-task"), lifecycle("rerun")),
        Endpoint("cancelTask", "POST", "/task/<taskId>/cancel", _by("cancel-task"), lifecycle("cancel")),
        Endpoint(
            "claimWork",
            "POST",
            "/claim-work/<taskQueueId>",
            {"AllOf": ["queue:claim-work:<taskQueueId>", "queue:worker-id:<workerGroup>/<workerId>"]},
            claim_work,
            input="queue/claim-work-request.json",
            greedy=tq,
        ),
        Endpoint(
            "claimTask",
            "POST",
            f"{run}/claim",
            {
                "AllOf": [
                    "queue:claim-task:<provisionerId>/<workerType>",
                    "queue:worker-id:<workerGroup>/<workerId>",
                ]
            },
            claim_task,
            input="local/task-claim-request.json",
        ),
        Endpoint("reclaimTask", "POST", f"{run}/reclaim", "queue:reclaim-task:<taskId>/<runId>", reclaim),
        Endpoint(
            "reportCompleted",
            "POST",
            f"{run}/completed",
            "queue:resolve-task:<taskId>/<runId>",
            resolution("completed"),
        ),
        Endpoint(
            "reportFailed",
            "POST",
            f"{run}/failed",
            "queue:resolve-task:<taskId>/<runId>",
            resolution("failed"),
        ),
        Endpoint(
            "reportException",
            "POST",
            f"{run}/exception",
            "queue:resolve-task:<taskId>/<runId>",
            resolution("exception"),
            input="queue/task-exception-request.json",
        ),
        Endpoint(
            "listTaskGroup",
            "GET",
            "/task-group/<taskGroupId>/list",
            "queue:list-task-group:<taskGroupId>",
            list_group,
            query=("continuationToken", "limit"),
        ),
        Endpoint(
            "getTaskGroup",
            "GET",
            "/task-group/<taskGroupId>",
            "queue:list-task-group:<taskGroupId>",
            get_group,
        ),
        Endpoint(
            "sealTaskGroup",
            "POST",
            "/task-group/<taskGroupId>/seal",
            "queue:seal-task-group:<schedulerId>/<taskGroupId>",
            seal_group,
        ),
        Endpoint(
            "cancelTaskGroup",
            "POST",
            "/task-group/<taskGroupId>/cancel",
            "queue:cancel-task-group:<schedulerId>/<taskGroupId>",
            cancel_group,
        ),
        Endpoint(
            "listDependentTasks",
            "GET",
            "/task/<taskId>/dependents",
            "queue:list-dependent-tasks:<taskId>",
            dependents,
            query=("continuationToken", "limit"),
        ),
        Endpoint(
            "pendingTasks",
            "GET",
            "/pending/<taskQueueId>",
            "queue:pending-count:<taskQueueId>",
            pending,
            greedy=tq,
        ),
        Endpoint(
            "taskQueueCounts",
            "GET",
            "/task-queues/<taskQueueId>/counts",
            {"AllOf": ["queue:pending-count:<taskQueueId>", "queue:claimed-count:<taskQueueId>"]},
            queue_counts,
            greedy=tq,
        ),
    ]
