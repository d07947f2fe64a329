"""``features.taskclusterProxy``: the task calls Taskcluster with exactly its own scopes (§5.2).

The worker runs the proxy itself (``tcworker.proxy``, in its own event loop) and signs every
request with the run's *current* temporary credentials — swapped after each reclaim through
``run.on_credentials`` — and ``authorizedScopes`` = ``task.scopes`` +
``queue:create-artifact:<taskId>/<runId>``, as generic-worker does. The task only learns the
proxy's URL (``TASKCLUSTER_PROXY_URL``); credentials never reach its environment, argv or files.

Where the proxy listens:
- simple / multiuser engines: ``127.0.0.1:<taskclusterProxyPort + 4·slot>`` (generic-worker's port
  layout); on multiuser only the task's own OS user and root may connect (``tcworker.proxy.peers``).
- docker-worker payloads: ``http://taskcluster`` inside the container — the run's own docker
  network, the proxy on its gateway port 80 (``tcworker.proxy.gateway``), reachable only from the
  run's containers.
- generic-worker payloads on the docker engine: a container cannot reach the host's loopback, so
  both ``taskclusterProxyInterface`` values use the run's network: the proxy listens on its
  gateway at the slot's port; ``docker-bridge`` also exports ``TASKCLUSTER_DOCKER_NETWORK`` and
  ``TASKCLUSTER_PROXY_GATEWAY`` as generic-worker does.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from typing import TYPE_CHECKING, Any

import aiohttp

from tcworker.engines.base import Unsupported
from tcworker.errors import InternalError, MalformedPayload
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.proxy import gateway
from tcworker.proxy.peers import PeerPolicy
from tcworker.proxy.server import ProxyServer, TaskclusterRoutes, new_upstream_session
from tcworker.proxy.signing import ProxyCredentials, RequestSigner

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.tcapi.clients import Clients

log = logging.getLogger(__name__)

PORTS_PER_SLOT = 4  # generic-worker: livelog PUT/GET, interactive and proxy share base + 4·slot
DOCKER_HOST_NAME = "taskcluster"


def raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: a task's many proxy connections use worker fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard)
            )


class SlotPool:
    """Port slots 0…capacity-1 of this worker process (a run holds one while its proxy listens)."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def take(self) -> int:
        slot = 0
        while slot in self._taken:
            slot += 1
        self._taken.add(slot)
        return slot

    def give_back(self, slot: int) -> None:
        self._taken.discard(slot)


class TaskclusterProxyFeature(Feature):
    name = "taskclusterProxy"
    config_gate = "enableTaskclusterProxy"

    def __init__(self) -> None:
        self.slots = SlotPool()
        self._session: aiohttp.ClientSession | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        raise_open_file_limit()

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """One pooled upstream session per worker process (created in the worker's loop)."""
        if self._session is None or self._session.closed:
            self._session = new_upstream_session()
        return self._session

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not payload_feature_flag(run.payload, "taskclusterProxy"):
            return None
        return TaskclusterProxyRun(self, run)


def authorized_scopes(task: Any, task_id: str, run_id: int) -> list[str]:
    scopes = [str(s) for s in (task.get("scopes") or [])]
    return [*scopes, f"queue:create-artifact:{task_id}/{run_id}"]


class TaskclusterProxyRun(TaskFeature):
    def __init__(self, feature: TaskclusterProxyFeature, run: RunHandle) -> None:
        self.feature = feature
        self.run = run
        self.slot: int | None = None
        self.server: ProxyServer | None = None
        self.on_gateway = False
        self.interface = str(run.payload.get("taskclusterProxyInterface", "localhost"))

    @property
    def _run_key(self) -> tuple[str, int]:
        return (self.run.task_id, self.run.run_id)

    async def start(self) -> None:
        run = self.run
        signer = RequestSigner(
            ProxyCredentials.from_taskcluster(run.credentials),
            authorized_scopes(run.task, run.task_id, run.run_id),
        )
        run.on_credentials(lambda creds: signer.update(ProxyCredentials.from_taskcluster(creds)))
        routes = TaskclusterRoutes(run.root_url, signer, self.feature.session)
        sandbox = run.sandbox
        if run.payload_kind == "docker":
            try:
                network = await gateway.serve_on_gateway(self._run_key, sandbox, {DOCKER_HOST_NAME: routes})
            except Unsupported as e:
                raise InternalError(
                    f"the {run.engine_name} engine cannot give a container its own network"
                ) from e
            self.on_gateway = True
            url = f"http://{DOCKER_HOST_NAME}"
            where = f"{network.gateway}:{gateway.GATEWAY_PORT} on network {network.name}"
        elif run.engine_name == "docker":
            network = await sandbox.join_task_network()
            sandbox.add_host(DOCKER_HOST_NAME, network.gateway)
            port = self._port()
            await self._listen(routes, PeerPolicy(allowed_network=network.subnet), network.gateway, port)
            url = f"http://{network.gateway}:{port}"
            where = f"{network.gateway}:{port} on network {network.name}"
            if self.interface == "docker-bridge":
                run.feature_env["TASKCLUSTER_DOCKER_NETWORK"] = network.name
                run.feature_env["TASKCLUSTER_PROXY_GATEWAY"] = network.gateway
        else:
            if self.interface != "localhost":
                raise MalformedPayload(
                    f"payload.taskclusterProxyInterface {self.interface!r} needs the docker engine; "
                    f"the {run.engine_name} engine serves the proxy on localhost only"
                )
            policy = PeerPolicy()
            if run.engine_name == "multiuser":
                # Only the task user and root; under runTaskAsCurrentUser the commands run as root.
                uid = sandbox.task_uid()
                policy = PeerPolicy(allowed_uids=(uid if uid is not None else 0,))
            port = self._port()
            await self._listen(routes, policy, "127.0.0.1", port)
            url = f"http://127.0.0.1:{port}"
            where = f"127.0.0.1:{port}"
        run.feature_env["TASKCLUSTER_PROXY_URL"] = url
        run.log.info(
            f"[taskcluster-proxy] listening at {where} (TASKCLUSTER_PROXY_URL={url}); requests are signed "
            f"with this run's credentials, limited to the task's scopes"
        )

    def _port(self) -> int:
        self.slot = self.feature.slots.take()
        return int(self.run.config.taskclusterProxyPort) + PORTS_PER_SLOT * self.slot

    async def _listen(self, routes: TaskclusterRoutes, policy: PeerPolicy, host: str, port: int) -> None:
        run = self.run

        def refused(reason: str) -> None:
            log.warning(
                "taskcluster-proxy of %s/%s refused a connection: %s", run.task_id, run.run_id, reason
            )

        server = ProxyServer({"": routes}, policy, on_refused=refused)
        try:
            await server.listen(host, port)
        except OSError as e:
            await server.close()
            raise InternalError(
                f"taskcluster-proxy cannot listen on {host}:{port} (taskclusterProxyPort "
                f"{run.config.taskclusterProxyPort} + slot {self.slot}): {e.strerror or e}"
            ) from e
        self.server = server

    async def stop(self, outcome: RunOutcome) -> None:
        try:
            if self.server is not None:
                await self.server.close()
            if self.on_gateway:
                await gateway.stop_serving(self._run_key, [DOCKER_HOST_NAME])
        finally:
            if self.slot is not None:
                self.feature.slots.give_back(self.slot)
                self.slot = None
