"""The one listener a docker-worker run's proxies share: its network's gateway, port 80.

docker-worker tasks reach their proxies by name on port 80 (``http://taskcluster``,
``http://relengapi``, ``http://balrog``, ``http://testdroid``). Docker forwards nothing to the
host unless something listens there, so the worker listens on the gateway address of the run's
own docker network, admits only peers from that network's subnet (a container of another task
can route to this address too, but from another subnet), and dispatches by ``Host``. Several
features may each serve some of those names for the same run; this registry gives them one
shared, reference-counted listener per run, so features stay independent of each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from tcworker.engines.base import Sandbox, TaskNetwork
from tcworker.proxy.peers import PeerPolicy
from tcworker.proxy.server import Handler, ProxyServer

GATEWAY_PORT = 80
log = logging.getLogger(__name__)


@dataclass
class _Shared:
    network: TaskNetwork
    server: ProxyServer
    users: int = 0
    names: set[str] = field(default_factory=set)


_by_run: dict[tuple[str, int], _Shared] = {}
_lock = asyncio.Lock()


async def serve_on_gateway(
    run_key: tuple[str, int], sandbox: Sandbox, hosts: Mapping[str, Handler]
) -> TaskNetwork:
    """Serve ``hosts`` (Host name → handler) on the run's gateway port 80; names resolve there."""
    async with _lock:
        shared = _by_run.get(run_key)
        if shared is None:
            network = await sandbox.join_task_network()

            def refused(reason: str) -> None:
                log.warning("proxy of %s/%s refused a connection: %s", run_key[0], run_key[1], reason)

            server = ProxyServer({}, PeerPolicy(allowed_network=network.subnet), on_refused=refused)
            await server.listen(network.gateway, GATEWAY_PORT)
            shared = _by_run[run_key] = _Shared(network, server)
        shared.users += 1
        shared.server.serve(hosts)
        for name in hosts:
            if name:
                sandbox.add_host(name, shared.network.gateway)
        return shared.network


async def stop_serving(run_key: tuple[str, int], hosts: list[str]) -> None:
    """Drop ``hosts``; the last user of the run's listener closes it."""
    async with _lock:
        shared = _by_run.get(run_key)
        if shared is None:
            return
        shared.server.unserve(hosts)
        shared.users -= 1
        if shared.users > 0:
            return
        del _by_run[run_key]
    await shared.server.close()
