"""Artifact API methods of the queue (spec §2.6.8-2.6.12): create/finish, redirects, content, listings."""

from __future__ import annotations

from typing import Any

from tcworker.platform.api import Call, Endpoint, Reply
from tcworker.platform.clock import now_ms
from tcworker.platform.objects.service import ObjectService
from tcworker.platform.queue.artifacts import Artifact, ArtifactService

_GET_ARTIFACT = {"AllOf": [{"for": "name", "in": "names", "each": "queue:get-artifact:<name>"}]}


def endpoints(artifacts: ArtifactService, objects: ObjectService) -> list[Endpoint]:
    """createArtifact, finishArtifact, getArtifact & co., bound to the services."""

    async def create_artifact(call: Call) -> Any:
        return await artifacts.create(
            call.params["taskId"], int(call.params["runId"]), call.params["name"], call.payload
        )

    async def finish_artifact(call: Call) -> Any:
        p = call.params
        await artifacts.finish(p["taskId"], int(p["runId"]), p["name"], call.payload["uploadId"])
        return None

    async def fetch(call: Call, latest: bool) -> tuple[Artifact, int]:
        call.authorize(names=[call.params["name"]])
        task_id = call.params["taskId"]
        run_id = await artifacts.latest_run(task_id) if latest else int(call.params["runId"])
        art = await artifacts.follow(
            task_id, run_id, call.params["name"], lambda names: call.authorize(names=names)
        )
        return art, run_id

    def redirect(latest: bool) -> Any:
        async def handler(call: Call) -> Any:
            art, _ = await fetch(call, latest)
            header = {"x-taskcluster-artifact-storage-type": art.storage_type}
            if art.storage_type == "error":
                return Reply(
                    424, {"reason": art.details["reason"], "message": art.details["message"]}, header
                )
            if art.storage_type == "reference":
                url = art.details["url"]
            else:
                url = objects.simple_url(f"t/{art.task_id}/{art.run_id}/{art.name}", call.root_url)
            return Reply(303, {"storageType": art.storage_type, "url": url}, {**header, "Location": url})

        return handler

    def content(latest: bool) -> Any:
        async def handler(call: Call) -> Any:
            art, _ = await fetch(call, latest)
            if art.storage_type == "error":
                return {
                    "storageType": "error",
                    "reason": art.details["reason"],
                    "message": art.details["message"],
                }
            if art.storage_type == "reference":
                return {"storageType": "reference", "url": art.details["url"]}
            object_name = f"t/{art.task_id}/{art.run_id}/{art.name}"
            creds = artifacts.issuer.download_credentials(
                art.task_id, art.run_id, art.name, f"object:download:{object_name}", now_ms()
            )
            return {"storageType": "object", "name": object_name, "credentials": creds}

        return handler

    async def artifact_info(call: Call) -> Any:
        p = call.params
        return await artifacts.info(p["taskId"], int(p["runId"]), p["name"])

    async def latest_artifact_info(call: Call) -> Any:
        run_id = await artifacts.latest_run(call.params["taskId"])
        return await artifacts.info(call.params["taskId"], run_id, call.params["name"])

    async def list_artifacts(call: Call) -> Any:
        run_id = int(call.params["runId"]) if "runId" in call.params else None
        return await artifacts.listing(call.params["taskId"], run_id, call.continuation(), call.limit())

    run = "/task/<taskId>/runs/<runId>"
    art = frozenset({"name"})
    return [
        Endpoint(
            "createArtifact",
            "POST",
            f"{run}/artifacts/<name>",
            "queue:create-artifact:<taskId>/<runId>",
            create_artifact,
            input="queue/post-artifact-request.json",
            greedy=art,
        ),
        Endpoint(
            "finishArtifact",
            "PUT",
            f"{run}/artifacts/<name>",
            "queue:create-artifact:<taskId>/<runId>",
            finish_artifact,
            input="queue/finish-artifact-request.json",
            greedy=art,
        ),
        Endpoint("getArtifact", "GET", f"{run}/artifacts/<name>", _GET_ARTIFACT, redirect(False), greedy=art),
        Endpoint(
            "getLatestArtifact",
            "GET",
            "/task/<taskId>/artifacts/<name>",
            _GET_ARTIFACT,
            redirect(True),
            greedy=art,
        ),
        Endpoint(
            "artifact", "GET", f"{run}/artifact-content/<name>", _GET_ARTIFACT, content(False), greedy=art
        ),
        Endpoint(
            "latestArtifact",
            "GET",
            "/task/<taskId>/artifact-content/<name>",
            _GET_ARTIFACT,
            content(True),
            greedy=art,
        ),
        Endpoint(
            "listArtifacts",
            "GET",
            f"{run}/artifacts",
            "queue:list-artifacts:<taskId>:<runId>",
            list_artifacts,
            query=("continuationToken", "limit"),
        ),
        Endpoint(
            "listLatestArtifacts",
            "GET",
            "/task/<taskId>/artifacts",
            "queue:list-artifacts:<taskId>",
            list_artifacts,
            query=("continuationToken", "limit"),
        ),
        Endpoint(
            "artifactInfo",
            "GET",
            f"{run}/artifact-info/<name>",
            "queue:list-artifacts:<taskId>:<runId>",
            artifact_info,
            greedy=art,
        ),
        Endpoint(
            "latestArtifactInfo",
            "GET",
            "/task/<taskId>/artifact-info/<name>",
            "queue:list-artifacts:<taskId>",
            latest_artifact_info,
            greedy=art,
        ),
    ]
