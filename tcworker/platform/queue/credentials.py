"""Temporary credentials the queue hands out: task runs (§2.7) and artifact up/downloads (§2.6.8/11).

All are *named* credentials issued by the queue's own client (``static/taskcluster/queue``,
scope ``*``), whose access token lives in the database so credentials survive a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tcworker.platform.auth import tempcreds
from tcworker.platform.clock import unix_seconds


@dataclass(frozen=True)
class Issuer:
    client_id: str
    access_token: str

    def task_credentials(
        self,
        task_id: str,
        run_id: int,
        worker: tuple[str, str],
        task_scopes: Sequence[str],
        now_ms: int,
        taken_until_ms: int,
    ) -> dict[str, str]:
        """Credentials for one claimed run: the three run scopes plus the task's own scopes."""
        name = (
            f"task-client/{task_id}/{run_id}/on/{worker[0]}/{worker[1]}/until/{unix_seconds(taken_until_ms)}"
        )
        scopes = [
            f"queue:reclaim-task:{task_id}/{run_id}",
            f"queue:resolve-task:{task_id}/{run_id}",
            f"queue:create-artifact:{task_id}/{run_id}",
            *task_scopes,
        ]
        return tempcreds.issue(
            self.client_id,
            self.access_token,
            name=name,
            scopes=scopes,
            start_ms=now_ms,
            expiry_ms=taken_until_ms,
        )

    def upload_credentials(
        self, task_id: str, run_id: int, worker: tuple[str, str], scope: str, now_ms: int, expiry_ms: int
    ) -> dict[str, str]:
        name = f"artifact-upload/{task_id}/{run_id}/on/{worker[0]}/{worker[1]}"
        return tempcreds.issue(
            self.client_id, self.access_token, name=name, scopes=[scope], start_ms=now_ms, expiry_ms=expiry_ms
        )

    def download_credentials(
        self, task_id: str, run_id: int, name: str, scope: str, now_ms: int
    ) -> dict[str, str]:
        client_id = f"artifact-download/{task_id}/{run_id}/{name}"
        return tempcreds.issue(
            self.client_id,
            self.access_token,
            name=client_id,
            scopes=[scope],
            start_ms=now_ms,
            expiry_ms=now_ms + 3600 * 1000,
        )
