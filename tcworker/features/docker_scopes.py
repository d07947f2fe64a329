"""The scopes a docker-worker payload needs, and the check of them against ``task.scopes``.

One table of rules (spec/worker.md §3.2, §3.5, §3.6, §3.8, with D2G's per-queue alternatives from
§3.9) turned into scope expressions, so the engine asks one question before it touches Docker:
"may this task do what its payload asks?". A missing scope is the task author's problem, hence
``MalformedPayload``; an auth service that cannot expand roles is nobody's fault, hence
``ResourceUnavailable``.

Private images: docker-worker required ``docker-worker:image:<name>`` only for images it pulled
with registry credentials. tcworker knows which images those are from ``private_registries``, the
registries (``host`` or ``host/path`` prefixes) the worker holds credentials for. With none
configured — the default — no image scope is ever required.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from tcworker import scopes as tcscopes
from tcworker.features.base import Feature, RunHandle, TaskFeature
from tcworker.scopes import ScopeExpr

# Features whose use needs ``docker-worker:feature:<flag>`` (spec §3.6). ``relengAPIProxy`` is not here:
# its ``docker-worker:relengapi-proxy:<permission>`` scopes choose what the proxy grants, they gate nothing.
SCOPED_FEATURES = ("allowPtrace", "balrogStageVPNProxy", "balrogVPNProxy")

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)

ExpandScopes = Callable[[list[str]], Awaitable[list[str]]]


def task_queue_id(provisioner_id: str, worker_type: str) -> str:
    return f"{provisioner_id}/{worker_type}"


def _either(scope: str, queue_scope: str) -> ScopeExpr:
    """A scope or its per-queue variant (D2G accepts both)."""
    return {"AnyOf": [scope, queue_scope]}


def split_image_name(name: str) -> tuple[str, str]:
    """``(registry, repository[:tag|@digest])`` with Docker's rule for the first path component.

    The first component is a registry host when it contains ``.`` or ``:`` or is ``localhost``;
    otherwise the image lives on Docker Hub (``ubuntu`` is ``docker.io/library/ubuntu``).
    """
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower(), rest
    if sep:
        return DOCKER_HUB, name
    return DOCKER_HUB, f"library/{name}"


def normalized_image_name(name: str) -> str:
    """The name with ``:latest`` added when it carries neither tag nor digest (what ``docker pull`` uses)."""
    last = name.rsplit("/", 1)[-1]
    if "@" in last or ":" in last:
        return name
    return f"{name}:latest"


def is_private_image(name: str, private_registries: Collection[str]) -> bool:
    """True when ``name`` is served by a registry the worker holds credentials for.

    An entry matches by host (``registry.example.com``, ``localhost:5000``; every Docker Hub alias
    counts as ``docker.io``) or by ``host/path`` prefix at a path boundary
    (``registry.example.com/team`` matches ``registry.example.com/team/app:1``, not ``…/teamx/app``).
    """
    registry, repo = split_image_name(name)
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    full = f"{registry}/{repo}"
    for entry in private_registries:
        entry = entry.strip().rstrip("/")
        if not entry:
            continue
        host, sep, path = entry.partition("/")
        host = host.lower()
        if host in _DOCKER_HUB_ALIASES:
            host = DOCKER_HUB
        if host != registry:
            continue
        if not sep or full.startswith(f"{host}/{path}/") or full == f"{host}/{path}":
            return True
    return False


def image_scopes(image: Any, private_registries: Collection[str] = ()) -> list[ScopeExpr]:
    """Scopes for the payload's ``image`` (spec §3.2)."""
    if isinstance(image, str):
        name = image
    elif isinstance(image, Mapping) and image.get("type") == "docker-image":
        name = str(image.get("name", ""))
    elif isinstance(image, Mapping) and image.get("type") in ("task-image", "indexed-image"):
        path = str(image.get("path", ""))
        return [] if path.startswith("public/") else [f"queue:get-artifact:{path}"]
    else:
        return []
    if not name or not is_private_image(name, private_registries):
        return []
    normal = normalized_image_name(name)
    if normal == name:
        return [f"docker-worker:image:{name}"]
    # Accept the scope for the name as written or for the name docker actually pulls.
    return [{"AnyOf": [f"docker-worker:image:{name}", f"docker-worker:image:{normal}"]}]


def required_scopes(
    payload: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    provisioner_id: str,
    worker_type: str,
    private_registries: Collection[str] = (),
) -> list[ScopeExpr]:
    """Every scope expression the payload needs, in a stable order (image, caches, capabilities, features).

    ``task`` is accepted for rules that depend on the task definition; none does today, but callers
    should not have to change when one does.
    """
    del task  # no rule reads the task definition yet
    queue = task_queue_id(provisioner_id, worker_type)
    required: list[ScopeExpr] = list(image_scopes(payload.get("image"), private_registries))

    for name in sorted(payload.get("cache") or {}):
        required.append(f"docker-worker:cache:{name}")

    caps = payload.get("capabilities") or {}
    if caps.get("privileged"):
        required.append(
            _either("docker-worker:capability:privileged", f"docker-worker:capability:privileged:{queue}")
        )
    devices = caps.get("devices") or {}
    for dev in sorted(devices):
        if devices[dev]:
            required.append(
                _either(
                    f"docker-worker:capability:device:{dev}", f"docker-worker:capability:device:{dev}:{queue}"
                )
            )
    if caps.get("disableSeccomp"):
        required.append("docker-worker:capability:disableSeccomp")

    features = payload.get("features") or {}
    for flag in SCOPED_FEATURES:
        if features.get(flag):
            required.append(f"docker-worker:feature:{flag}")
    return required


async def check_scopes(
    payload: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    provisioner_id: str,
    worker_type: str,
    expand: ExpandScopes | None,
    private_registries: Collection[str] = (),
) -> None:
    """Raise ``MalformedPayload`` unless ``task["scopes"]`` satisfy every docker-worker rule
    (the one check of ``tcworker.scopes.check_task_scopes`` over this module's table)."""
    required = required_scopes(
        payload,
        task,
        provisioner_id=provisioner_id,
        worker_type=worker_type,
        private_registries=private_registries,
    )
    await tcscopes.check_task_scopes(task.get("scopes") or [], required, expand)


class DockerWorkerScopesFeature(Feature):
    """docker-worker's scope rules (image, caches, capabilities, devices, features) as one feature:
    its ``required_scopes`` go through the run's one scope check before anything is prepared."""

    name = "dockerWorkerScopes"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "docker":
            return None
        return _DockerWorkerScopes(run)


class _DockerWorkerScopes(TaskFeature):
    def __init__(self, run: RunHandle) -> None:
        self.run = run

    def required_scopes(self) -> Sequence[ScopeExpr]:
        config = self.run.config
        return required_scopes(
            self.run.payload,
            self.run.task,
            provisioner_id=config.provisionerId,
            worker_type=config.workerType,
        )
