"""Index API methods: findTask and insertTask."""

from __future__ import annotations

from typing import Any

from tcworker.platform.api import Call, Endpoint
from tcworker.platform.index.service import IndexService


def endpoints(index: IndexService) -> list[Endpoint]:
    async def find_task(call: Call) -> Any:
        return await index.find(call.params["indexPath"])

    async def insert_task(call: Call) -> Any:
        return await index.insert(call.params["namespace"], call.payload)

    return [
        Endpoint("findTask", "GET", "/task/<indexPath>", "index:find-task:<indexPath>", find_task),
        Endpoint(
            "insertTask",
            "PUT",
            "/task/<namespace>",
            "index:insert-task:<namespace>",
            insert_task,
            input="index/insert-task-request.json",
        ),
    ]
