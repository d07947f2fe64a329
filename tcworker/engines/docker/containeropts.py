"""docker-worker ``features`` and ``capabilities`` → container options (spec/worker.md §3.5, §3.6).

Decides, once per run and before anything is created, which payload toggles this engine honours,
which it refuses (``malformed-payload`` naming the feature), and what each accepted one adds to
the container: ``privileged``, devices, ``CapAdd``, seccomp. Scope checks are separate
(``tcworker.features.docker_scopes``); the pool-level ``allowPrivileged`` gate is checked here because it
is a property of this worker, not of the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tcworker.errors import MalformedPayload

# Accepted without changing the container: the worker's normal live log and backing log already
# do what these asked for. ``bufferLog`` (named in the issue) never existed in docker-worker; it is
# accepted as an alias of ``bulkLog`` (whole-log upload = the normal backing log).
LOG_FEATURES = frozenset({"localLiveLog", "bulkLog", "bufferLog"})
# Served by features (tcworker.features.taskcluster_proxy, tcworker.features.docker_proxies,
# tcworker.features.chain_of_trust, tcworker.features.interactive).
PROXY_FEATURES = frozenset(
    {"taskclusterProxy", "relengAPIProxy", "balrogVPNProxy", "balrogStageVPNProxy", "testdroidProxy"}
)
HANDLED_FEATURES = LOG_FEATURES | PROXY_FEATURES | {
    "dockerSave",
    "allowPtrace",
    "artifacts",
    "chainOfTrust",
    "interactive",
}
NOT_YET: dict[str, str] = {}
NOT_SUPPORTED = {
    "dind": "docker-in-docker is not supported by tcworker (it was removed from docker-worker)",
}

SHM_SIZE = "1800m"  # docker-worker gave every container a 1.8 GB /dev/shm


@dataclass
class ContainerOptions:
    """Keyword arguments for ``containers.create`` that come from features and capabilities."""

    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    security_opt: list[str] = field(default_factory=list)

    def create_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"privileged": self.privileged}
        if self.cap_add:
            kwargs["cap_add"] = list(self.cap_add)
        if self.devices:
            kwargs["devices"] = list(self.devices)
        if self.security_opt:
            kwargs["security_opt"] = list(self.security_opt)
        return kwargs


def enabled_features(payload: Mapping[str, Any]) -> set[str]:
    features = payload.get("features") or {}
    return {name for name, on in features.items() if on is True}


def container_options(
    payload: Mapping[str, Any], *, allow_privileged: bool, video_device: int
) -> ContainerOptions:
    """Validate ``features`` / ``capabilities`` and turn them into container options.

    Raises ``MalformedPayload`` naming the feature or capability this worker cannot honour.
    """
    opts = ContainerOptions()
    for name in sorted(enabled_features(payload)):
        if name in NOT_YET:
            raise MalformedPayload(
                f"payload.features.{name} is not available on this worker: {NOT_YET[name]}"
            )
        if name in NOT_SUPPORTED:
            raise MalformedPayload(
                f"payload.features.{name} is not available on this worker: {NOT_SUPPORTED[name]}"
            )
        if name not in HANDLED_FEATURES:
            raise MalformedPayload(f"payload.features.{name} is not a docker-worker feature tcworker knows")
    features = enabled_features(payload)
    if "allowPtrace" in features:
        opts.cap_add.append("SYS_PTRACE")

    caps = payload.get("capabilities") or {}
    if caps.get("privileged") is True:
        if not allow_privileged:
            raise MalformedPayload(
                "payload.capabilities.privileged is not allowed on this worker pool "
                "(worker config allowPrivileged is false): remove it or use a pool that allows it"
            )
        opts.privileged = True
    if caps.get("disableSeccomp") is True:
        opts.security_opt.append("seccomp=unconfined")
    devices = caps.get("devices") or {}
    for dev, on in sorted(devices.items()):
        if on is not True:
            continue
        if dev == "hostSharedMemory":
            _need_host_path("/dev/shm", dev)
            opts.binds["/dev/shm"] = {"bind": "/dev/shm", "mode": "rw"}
        elif dev == "kvm":
            _need_host_path("/dev/kvm", dev)
            opts.devices.append("/dev/kvm:/dev/kvm:rwm")
        elif dev == "loopbackAudio":
            _need_host_path("/dev/snd", dev)
            opts.devices.append("/dev/snd:/dev/snd:rwm")
        elif dev == "loopbackVideo":
            path = f"/dev/video{video_device}"
            _need_host_path(path, dev)
            opts.devices.append(f"{path}:{path}:rwm")
        else:
            raise MalformedPayload(f"payload.capabilities.devices.{dev} is not a device docker-worker knows")
    return opts


def _need_host_path(path: str, dev: str) -> None:
    if not os.path.exists(path):
        raise MalformedPayload(
            f"payload.capabilities.devices.{dev} needs {path} on the worker host, which this worker does not have"
        )
