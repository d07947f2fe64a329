"""docker-worker ``features`` and ``capabilities`` as container options (spec/worker.md §3.5, §3.6).

``admit`` decides, before the engine prepares anything, which toggles this worker honours and
refuses the others (``malformed-payload`` naming them, see ``engines.docker.containeropts``);
``start`` hands the resulting options (privileged, devices, ``CapAdd``, seccomp, host shared
memory) to the docker sandbox, which applies them to every container of the run. Their scopes are
the docker-worker scope rules feature's (``docker_scopes``).
"""

from __future__ import annotations

from tcworker.engines.docker.containeropts import ContainerOptions, container_options
from tcworker.features.base import Feature, RunHandle, TaskFeature


class DockerCapabilitiesFeature(Feature):
    name = "dockerCapabilities"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        return _Capabilities(run) if run.payload_kind == "docker" else None


class _Capabilities(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run
        self.options = ContainerOptions()

    async def admit(self) -> None:
        config = self.run.config
        self.options = container_options(
            self.run.payload,
            allow_privileged=config.allowPrivileged,
            video_device=config.loopbackVideoDeviceNumber,
        )

    async def start(self) -> None:
        self.run.sandbox.configure_container(self.options)
