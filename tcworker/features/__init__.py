"""The one ordered feature list of a run, for both payload kinds (design G10), and the payload
toggles this build cannot serve yet.

``FEATURES`` is plain data: ``"module:Class"`` strings imported when a worker starts, in the
order the worker starts them (and stops them in reverse). A feature that does not apply to a
payload (a docker-worker feature on a generic-worker payload, a toggle the task does not set)
returns ``None`` from ``for_run`` and is skipped. Positions that matter, following
generic-worker's ``TaskRun.Run`` order:

- ``liveLog`` right after ``superseding`` (generic-worker starts it right after the payload
  checks): the reference artifact exists before the commands, and its stop (the link) runs
  near the end.
- ``superseding`` first: its ``stop`` runs last, once the primary's artifacts are up.
- the docker-worker scope rules and every admission check early (they only check).
- ``encryptedEnv``, ``osGroups``, ``runTaskAsCurrentUser``, capabilities and caches before anything
  that runs code as the task user: they shape the sandbox the commands run in.
- ``generateCertificate`` and ``chainOfTrust`` before ``dockerSave``: their stops run after every
  artifact (payload artifacts, then the saved image) is uploaded and hashed, chainOfTrust first.
- ``dockerSave`` before ``artifacts``: its ``stop`` runs after the artifacts are uploaded.
- ``mounts`` before ``artifacts``: caches are in place before the commands and are moved back
  (or purged) only after the artifacts were collected from them.
- ``artifacts`` late: its ``stop`` runs early in the reverse unwind, right after the max-run-time
  timer is stopped, so payload artifacts are found after the commands and before the logs.
- ``resourceMonitor`` after ``mounts`` (generic-worker's order): it only watches the commands,
  through ``RunHandle.command_watchers``.
- ``interactive`` right before ``maxRunTime``: shells end as soon as the commands end (as
  generic-worker ends them with the task), before any artifact is collected.
- ``maxRunTime`` second to last: its timer starts just before the commands and stops before uploads.
- ``commandExecutor`` last: running the commands *is* its ``start``.

A new feature is one module here plus one line in this list; ``tcworker show-features`` prints it.

The backing log is published by ``TaskRun`` itself after every feature stopped, so that the log
is complete (including the lines features write while stopping); the live log's stream ends then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from tcworker.features.base import Feature

FEATURES: list[str] = [
    "tcworker.features.superseding:SupersedingFeature",  # docker: supersederUrl (claims, then resolves the others)
    "tcworker.features.livelog:LiveLogFeature",  # early: live from the start, linked near the end
    "tcworker.features.docker_scopes:DockerWorkerScopesFeature",  # docker: the docker-worker scope rules
    "tcworker.features.encrypted_env:EncryptedEnvFeature",  # docker: payload.encryptedEnv → secret env
    "tcworker.features.os_groups:OSGroupsFeature",  # payload.osGroups (scopes per group)
    "tcworker.features.run_task_as_current_user:RunTaskAsCurrentUserFeature",  # multiuser only
    "tcworker.features.docker_capabilities:DockerCapabilitiesFeature",  # docker: features/capabilities/devices
    "tcworker.features.docker_caches:DockerCachesFeature",  # docker: payload.cache (+ purge requests)
    "tcworker.features.generate_certificate:GenerateCertificateFeature",  # stops after chainOfTrust
    "tcworker.features.chain_of_trust:ChainOfTrustFeature",  # stops after every artifact is uploaded
    "tcworker.features.docker_save:DockerSaveFeature",  # docker: features.dockerSave (stops after artifacts)
    "tcworker.features.taskcluster_proxy:TaskclusterProxyFeature",  # taskclusterProxy (§5.2)
    "tcworker.features.docker_proxies:RelengAPIProxyFeature",  # docker-worker forwarders (§3.6) …
    "tcworker.features.docker_proxies:BalrogVPNProxyFeature",
    "tcworker.features.docker_proxies:BalrogStageVPNProxyFeature",
    "tcworker.features.docker_proxies:TestdroidProxyFeature",
    "tcworker.features.mounts:MountsFeature",  # payload.mounts; its stop runs after artifacts
    "tcworker.features.artifacts:ArtifactsFeature",  # payload.artifacts
    "tcworker.features.resource_monitor:ResourceMonitorFeature",  # memory per command; aborts on sustained high use
    "tcworker.features.interactive:InteractiveFeature",  # features.interactive: ends with the commands, before uploads
    "tcworker.features.max_run_time:MaxRunTimeFeature",  # second to last: timer around the commands
    "tcworker.features.command_executor:CommandExecutorFeature",  # last: runs the commands
]


def load_features() -> list[Feature]:
    """Fresh instances of every feature, in ``FEATURES`` order."""
    out: list[Feature] = []
    for spec in FEATURES:
        module_name, _, attr = spec.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        out.append(cls())
    return out


def describe_features() -> list[dict[str, str]]:
    """``FEATURES`` as rows (name, class, what it serves): what ``tcworker show-features`` prints."""
    rows = []
    for spec, feature in zip(FEATURES, load_features(), strict=True):
        module = importlib.import_module(spec.partition(":")[0])
        summary = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        rows.append({"name": feature.name, "class": spec, "summary": summary})
    return rows


def _flag(name: str) -> Callable[[Mapping[str, Any]], bool]:
    def requested(payload: Mapping[str, Any]) -> bool:
        return bool((payload.get("features") or {}).get(name, False))

    return requested


# Payload toggles of generic-worker that need a feature this build does not have yet:
# feature name → "does this payload ask for it". A name that appears among the loaded features
# is served by that feature and drops out of this check automatically.
PAYLOAD_TOGGLES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "mounts": lambda p: bool(p.get("mounts")),
    "osGroups": lambda p: bool(p.get("osGroups")),
    "runTaskAsCurrentUser": _flag("runTaskAsCurrentUser"),
    "loopbackVideo": _flag("loopbackVideo"),
    "loopbackAudio": _flag("loopbackAudio"),
}


def unimplemented_requests(payload: Mapping[str, Any], features: list[Feature]) -> list[str]:
    """Toggles ``payload`` uses that no loaded feature serves (→ malformed-payload naming them)."""
    served = {f.name for f in features}
    return [name for name, requested in PAYLOAD_TOGGLES.items() if name not in served and requested(payload)]
