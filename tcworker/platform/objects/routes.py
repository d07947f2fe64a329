"""Object API methods (spec §3.1) plus the unauthenticated data URLs they hand out.

``/object-data/<token>`` is not an API method: it is the pre-signed PUT target of the
``putUrl`` upload method and the GET target of ``simple``/``getUrl`` downloads. The token
authorises the request, so no Hawk is involved.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tcworker.platform.api import Call, Endpoint, Reply
from tcworker.platform.objects.service import ObjectService

DATA_PATH = "/object-data/{token}"


def endpoints(objects: ObjectService) -> list[Endpoint]:
    async def create_upload(call: Call) -> Any:
        call.authorize(projectId=call.payload["projectId"])
        return await objects.create_upload(call.params["name"], call.payload, call.root_url)

    async def finish_upload(call: Call) -> Any:
        call.authorize(projectId=call.payload["projectId"])
        await objects.finish_upload(call.params["name"], call.payload)
        return {}

    async def start_download(call: Call) -> Any:
        return await objects.start_download(
            call.params["name"], call.payload["acceptDownloadMethods"], call.root_url
        )

    async def metadata(call: Call) -> Any:
        return await objects.metadata(call.params["name"])

    async def download(call: Call) -> Any:
        await objects.finished_object(call.params["name"])
        url = objects.simple_url(call.params["name"], call.root_url)
        return Reply(303, None, {"Location": url})

    name = frozenset({"name"})
    upload_scope = "object:upload:<projectId>:<name>"
    return [
        Endpoint(
            "createUpload",
            "PUT",
            "/upload/<name>",
            upload_scope,
            create_upload,
            input="object/create-upload-request.json",
        ),
        Endpoint(
            "finishUpload",
            "POST",
            "/finish-upload/<name>",
            upload_scope,
            finish_upload,
            input="object/finish-upload-request.json",
        ),
        Endpoint(
            "startDownload",
            "PUT",
            "/start-download/<name>",
            "object:download:<name>",
            start_download,
            input="object/download-object-request.json",
            greedy=name,
        ),
        Endpoint("object", "GET", "/metadata/<name>", "object:download:<name>", metadata, greedy=name),
        Endpoint("download", "GET", "/download/<name>", "object:download:<name>", download, greedy=name),
    ]


def data_handlers(objects: ObjectService) -> tuple[Any, Any]:
    """aiohttp handlers for PUT and GET on ``/object-data/<token>``."""

    async def put(request: web.Request) -> web.StreamResponse:
        length = request.content_length
        await objects.receive(
            request.match_info["token"],
            request.content.iter_chunked(1 << 16),
            request.headers.get("Content-Type", ""),
            length,
            request.headers.get("Content-Encoding", "identity").strip().lower() or "identity",
            request.headers.get("Content-Digest"),
        )
        return web.Response(status=200)

    async def get(request: web.Request) -> web.StreamResponse:
        path, headers = await objects.data_for(request.match_info["token"])
        return web.FileResponse(path, headers=headers)

    return put, get
