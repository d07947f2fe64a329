"""Helpers of the inspector tests: task definitions and page fetching.

Kept apart from conftest.py so test modules can import them by name (several conftest.py files
share the module name `conftest`); the CI skip rule is ``helpers.ci.skip_or_fail``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import requests
import slugid

from helpers.submitter import iso

PROVISIONER = "inspector-prov"
#: A client that may create tasks but not cancel them: the 403 the page must show.
LIMITED = {"clientId": "inspector/limited", "accessToken": "limited-token-" + "x" * 20}
LIMITED_SCOPES = ["queue:create-task:*", "queue:scheduler-id:-", "queue:get-artifact:*"]


def definition(
    worker_type: str,
    *,
    group: str | None = None,
    name: str = "inspector test task",
    payload: dict[str, Any] | None = None,
    **metadata: str,
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "provisionerId": PROVISIONER,
        "workerType": worker_type,
        "schedulerId": "-",
        "taskGroupId": group or slugid.nice(),
        "created": iso(now),
        "deadline": iso(now + dt.timedelta(hours=1)),
        "expires": iso(now + dt.timedelta(days=1)),
        "retries": 1,
        "payload": payload if payload is not None else {"command": [["true"]], "maxRunTime": 60},
        "metadata": {
            "name": name,
            "description": metadata.get("description", "made by tests/inspector"),
            "owner": metadata.get("owner", "inspector@example.com"),
            "source": metadata.get("source", "https://example.com/tests/inspector"),
        },
    }


def get_page(root_url: str, path: str, **kw: Any) -> requests.Response:
    return requests.get(root_url + path, timeout=30, allow_redirects=kw.pop("allow_redirects", True), **kw)
