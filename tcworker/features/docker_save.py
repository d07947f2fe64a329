"""docker-worker's ``features.dockerSave``: the task's container, committed and saved, as
``public/dockerImage.tar`` (spec/worker.md §3.6), expiring after min(7 days, task expiry).

A later task runs on it with ``image: {"type": "task-image", …}``. The cache tarballs that
dockerSave also asks for are published by the caches feature, which holds the caches.
"""

from __future__ import annotations

import asyncio

from tcworker import tctime
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag

IMAGE_ARTIFACT = "public/dockerImage.tar"
SAVED_IMAGE_DAYS = 7


class DockerSaveFeature(Feature):
    name = "dockerSave"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "docker" or not payload_feature_flag(run.payload, "dockerSave"):
            return None
        return _DockerSave(run)


class _DockerSave(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run

    def reserved_artifacts(self) -> list[str]:
        return [IMAGE_ARTIFACT]

    async def stop(self, outcome: RunOutcome) -> None:
        if not outcome.commands_started:
            return
        out_dir = self.run.scratch_dir / "docker-save"
        await asyncio.to_thread(out_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
        saved = await self.run.sandbox.save_image(out_dir / "dockerImage.tar")
        if saved is None:
            self.run.log.warn("dockerSave: no container ran, so there is no image to save")
            return
        expires = tctime.from_now(SAVED_IMAGE_DAYS * 24 * 3600)
        task_expires = self.run.task.get("expires")
        if isinstance(task_expires, str):
            expires = min(expires, tctime.parse(task_expires))
        await self.run.publisher.upload_file(
            IMAGE_ARTIFACT, saved.path, "application/x-tar", tctime.to_json(expires)
        )
