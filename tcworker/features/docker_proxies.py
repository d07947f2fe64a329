"""docker-worker's other proxies as configurable forwarders: ``http://relengapi``, ``http://balrog``,
``http://testdroid`` inside the container (seed 002, spec/worker.md §3.6).

docker-worker ran Mozilla-specific sidecars for these. tcworker forwards instead: when the worker
config names the upstream (``relengAPIProxy: {"upstream": URL, "token": SECRET}``), the task's
requests to the host name are sent there with ``Authorization: Bearer <token>`` added by the
worker, so the credential never enters the container. Without that config the task is
malformed-payload naming the missing key. Scope rules are seed 002's: ``balrogVPNProxy`` and
``balrogStageVPNProxy`` need ``docker-worker:feature:<flag>`` (checked with the other
docker-worker scopes by the engine); ``relengAPIProxy`` needs at least one literal
``docker-worker:relengapi-proxy:<permission>`` scope (wildcards do not count, as upstream);
``testdroidProxy`` needs none. They share the run's gateway listener with taskclusterProxy
(``tcworker.proxy.gateway``), dispatched by ``Host``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from tcworker.engines.base import Unsupported
from tcworker.errors import InternalError, MalformedPayload
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.proxy import gateway
from tcworker.proxy.server import Forwarder, new_upstream_session

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

RELENGAPI_SCOPE_PREFIX = "docker-worker:relengapi-proxy:"


class ForwarderFeature(Feature):
    """One docker-worker proxy flag → a forwarder answering at ``http://<host_name>``."""

    host_name = ""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_upstream_session(limit=32)
        return self._session

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def enabled(self, config: WorkerConfig) -> bool:
        return bool(getattr(config, self.name))

    def disabled_reason(self, config: WorkerConfig) -> str | None:
        return (
            f"payload.features.{self.name} needs the worker config key {self.name} "
            f'({{"upstream": URL, "token": SECRET}}), which worker pool {config.task_queue_id} does not '
            "set. Remove the feature from the payload or use a pool that configures it."
        )

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "docker" or not payload_feature_flag(run.payload, self.name):
            return None
        return ForwarderRun(self, run)

    def check_scopes(self, task: Any) -> None:
        """Extra scope rules beyond ``required_scopes`` (relengapi's "at least one permission")."""


class RelengAPIProxyFeature(ForwarderFeature):
    name = "relengAPIProxy"
    host_name = "relengapi"

    def check_scopes(self, task: Any) -> None:
        permissions = [
            s[len(RELENGAPI_SCOPE_PREFIX) :]
            for s in task.get("scopes") or []
            if isinstance(s, str) and s.startswith(RELENGAPI_SCOPE_PREFIX) and not s.endswith("*")
        ]
        if not permissions:
            raise MalformedPayload(
                "payload.features.relengAPIProxy needs at least one scope "
                f"{RELENGAPI_SCOPE_PREFIX}<permission> in task.scopes (wildcards are not expanded)"
            )


class BalrogVPNProxyFeature(ForwarderFeature):
    name = "balrogVPNProxy"
    host_name = "balrog"


class BalrogStageVPNProxyFeature(ForwarderFeature):
    name = "balrogStageVPNProxy"
    host_name = "balrog"


class TestdroidProxyFeature(ForwarderFeature):
    name = "testdroidProxy"
    host_name = "testdroid"


class ForwarderRun(TaskFeature):
    def __init__(self, feature: ForwarderFeature, run: RunHandle) -> None:
        self.feature = feature
        self.run = run
        self.serving = False

    async def start(self) -> None:
        run, feature = self.run, self.feature
        feature.check_scopes(run.task)
        config = getattr(run.config, feature.name)
        token = str(config.get("token", ""))
        if token:
            run.log.add_secrets([token])  # masked in the task log, should it ever appear there
        forwarder = Forwarder(str(config["upstream"]), token, feature.session, feature.name)
        key = (run.task_id, run.run_id)
        try:
            network = await gateway.serve_on_gateway(key, run.sandbox, {feature.host_name: forwarder})
        except Unsupported as e:
            raise InternalError(
                f"the {run.engine_name} engine cannot give a container its own network"
            ) from e
        self.serving = True
        run.log.info(
            f"[{feature.name}] http://{feature.host_name} forwards to the configured upstream "
            f"(listening at {network.gateway}:{gateway.GATEWAY_PORT})"
        )

    async def stop(self, outcome: RunOutcome) -> None:
        if self.serving:
            await gateway.stop_serving((self.run.task_id, self.run.run_id), [self.feature.host_name])
