"""The worker's configuration: generic-worker's JSON keys, loaded, merged and validated (design G8).

Sources overlay each other in one direction: defaults < config file < ``TASKCLUSTER_*``
environment < command-line flags. Every key is spelled once, in ``KEYS`` (generic-worker's JSON
name, expected type, default); ``WorkerConfig`` fields carry exactly those names so a GW config
file reads the same here. Two failure classes keep GW's exit codes: a file that cannot be used
at all (unreadable, not JSON, unknown key, wrong JSON type) is ``ConfigError`` with exit 64;
values that parse but do not make sense are collected **all at once** and reported with exit 73.
Secrets (``accessToken``, ``certificate``) live in ``PrivateConfig`` whose ``repr`` redacts them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcworker.errors import ConfigError
from tcworker.exitcodes import ExitCode

ENGINE_NAMES = ("simple", "multiuser", "docker")

# The queue's own identifier rules (claim-work-request.json, task.json's taskQueueId): a worker
# with another value would start and then have every claimWork refused with 400.
IDENTIFIERS: dict[str, tuple[re.Pattern[str], str]] = {
    "provisionerId": (re.compile(r"[a-zA-Z0-9-_]{1,38}"), "1-38 letters, digits, '-' and '_'"),
    "workerType": (
        re.compile(r"[a-z]([-a-z0-9]{0,36}[a-z0-9])?"),
        "1-38 lower-case letters, digits and '-', starting with a letter and not ending with '-'",
    ),
    "workerGroup": (re.compile(r"[a-zA-Z0-9-_]{1,38}"), "1-38 letters, digits, '-' and '_'"),
    "workerId": (re.compile(r"[a-zA-Z0-9-_]{1,38}"), "1-38 letters, digits, '-' and '_'"),
}

_D2G_DEFAULTS: dict[str, Any] = {
    "enableD2G": False,
    "allowChainOfTrust": True,
    "allowDisableSeccomp": True,
    "allowGPUs": False,
    "allowHostSharedMemory": True,
    "allowInteractive": True,
    "allowKVM": True,
    "allowLoopbackAudio": True,
    "allowLoopbackVideo": True,
    "allowPrivileged": True,
    "allowPtrace": True,
    "allowTaskclusterProxy": True,
    "gpus": "all",
    "logTranslation": True,
}

# key → (JSON type, default). ``None`` default for required keys without a usable default.
KEYS: dict[str, tuple[type, Any]] = {
    "accessToken": (str, ""),
    "allowedHighMemoryDurationSecs": (int, 5),
    "availabilityZone": (str, ""),
    "cachesDir": (str, "caches"),
    "capacity": (int, 1),
    "certificate": (str, ""),
    "cleanUpTaskDirs": (bool, True),
    "clientId": (str, ""),
    "createObjectArtifacts": (bool, False),
    "d2gConfig": (dict, _D2G_DEFAULTS),
    "disableNativePayloads": (bool, False),
    "disableOOMProtection": (bool, False),
    "disableReboots": (bool, False),
    "downloadsDir": (str, "downloads"),
    "ed25519SigningKeyLocation": (str, ""),
    "enableChainOfTrust": (bool, True),
    "enableInteractive": (bool, True),
    "enableLiveLog": (bool, True),
    "enableLoopbackAudio": (bool, True),
    "enableLoopbackVideo": (bool, True),
    "enableMetadata": (bool, True),
    "enableMounts": (bool, True),
    "enableOSGroups": (bool, True),
    "enableResourceMonitor": (bool, True),
    "enableRunTaskAsCurrentUser": (bool, True),
    "enableTaskclusterProxy": (bool, True),
    "headlessTasks": (bool, False),
    "idleTimeoutSecs": (int, 0),
    "instanceId": (str, ""),
    "instanceType": (str, ""),
    "interactivePort": (int, 53654),
    "livelogExecutable": (str, "livelog"),
    "livelogExposePort": (int, 0),
    "livelogPortBase": (int, 60098),
    "loopbackAudioDeviceNumber": (int, 16),
    "loopbackVideoDeviceNumber": (int, 0),
    "maxMemoryUsagePercent": (int, 90),
    "maxTaskRunTime": (int, 86400),
    "minAvailableMemoryBytes": (int, 524288000),
    "numberOfTasksToRun": (int, 0),
    "privateIP": (str, ""),
    "provisionerId": (str, "test-provisioner"),
    "publicIP": (str, ""),
    "region": (str, ""),
    "requiredDiskSpaceMegabytes": (int, 10240),
    "rootURL": (str, ""),
    "runAfterUserCreation": (str, ""),
    "sentryProject": (str, "generic-worker"),
    "shutdownMachineOnIdle": (bool, False),
    "shutdownMachineOnInternalError": (bool, False),
    "taskclusterProxyExecutable": (str, "taskcluster-proxy"),
    "taskclusterProxyPort": (int, 80),
    "tasksDir": (str, ""),  # engine-dependent default, see _default_tasks_dir
    "workerGroup": (str, "test-worker-group"),
    "workerId": (str, ""),
    "workerLocation": (str, ""),
    "workerType": (str, ""),
    "workerTypeMetadata": (dict, {}),
    "wstAudience": (str, ""),
    "wstServerURL": (str, ""),
    # ---- tcworker's own keys ----
    "engine": (str, "simple"),
    "allowPrivileged": (bool, False),  # docker engine: may tasks run privileged containers
    "dockerImage": (str, ""),  # docker engine: image for generic-worker payloads ("" = engine default)
    "openpgpPrivateKeyLocation": (str, ""),  # docker engine: key for encryptedEnv
    "preloadedCaches": (dict, {}),  # cacheName → directory baked into the image, adopted as a warm cache
    "taskUserPoolSize": (int, 2),  # multiuser engine: task users made ahead in the background
    "reclaimIntervalSecs": (int, 0),  # test knob: reclaim every N s (0 = GW's takenUntil − 3 min)
    # Poll queue.status of each running run every N s to notice a cancel in seconds (0 = only at reclaim)
    "statusPollIntervalSecs": (int, 1),
    # "host:port" (or "port": 127.0.0.1) of the worker's /metrics and /health; "" = off
    "metricsListenAddress": (str, ""),
    "enableProvenance": (bool, True),  # chainOfTrust also publishes signed SLSA provenance
    "openpgpSigningKeyLocation": (str, ""),  # generateCertificate: armored OpenPGP secret key (GW 12–13)
    # Largest artifact file uploaded, in MiB; bigger ones become error artifacts. 5 GiB is what a
    # single PUT to S3 (the object service's putUrl on a real deployment) accepts at most.
    "maxArtifactSizeMegabytes": (int, 5120),
    # Per task (host engines: the task's cgroup pids.max / memory.max; docker: pids_limit /
    # mem_limit). Memory 0 = 80 % of the host's physical memory.
    "taskMaxProcesses": (int, 4096),
    "taskMaxMemoryMegabytes": (int, 0),
    # docker engine: docker-worker's other proxies as forwarders, {"upstream": URL, "token": secret}
    "relengAPIProxy": (dict, {}),
    "balrogVPNProxy": (dict, {}),
    "balrogStageVPNProxy": (dict, {}),
    "testdroidProxy": (dict, {}),
    # docker engine, features.interactive on docker-worker payloads (docker-worker's
    # interactive.minTime / interactive.expirationAfterSession): the container is kept at least
    # this many seconds from the start, and this many seconds after the last session closed
    "interactiveMinTime": (int, 180),
    "interactiveExpirationAfterSession": (int, 900),
}

# Forwarder configs ({"upstream", "token"}): their tokens are redacted like accessToken.
FORWARDER_KEYS = ("relengAPIProxy", "balrogVPNProxy", "balrogStageVPNProxy", "testdroidProxy")

# Older generic-worker spelling still found in configs (and in its --help text).
ALIASES = {"workerTypeMetaData": "workerTypeMetadata"}

REQUIRED = ("accessToken", "clientId", "rootURL", "workerId", "workerType", "ed25519SigningKeyLocation")
NON_EMPTY = ("cachesDir", "downloadsDir", "livelogExecutable", "provisionerId", "tasksDir", "workerGroup")
NON_NEGATIVE = (
    "allowedHighMemoryDurationSecs",
    "idleTimeoutSecs",
    "livelogExposePort",
    "minAvailableMemoryBytes",
    "numberOfTasksToRun",
    "reclaimIntervalSecs",
    "statusPollIntervalSecs",
    "requiredDiskSpaceMegabytes",
    "taskMaxMemoryMegabytes",
    "loopbackAudioDeviceNumber",
    "loopbackVideoDeviceNumber",
)

# TASKCLUSTER_* environment variables and the keys they set (file < env < flags).
ENV_KEYS = {
    "TASKCLUSTER_ROOT_URL": "rootURL",
    "TASKCLUSTER_CLIENT_ID": "clientId",
    "TASKCLUSTER_ACCESS_TOKEN": "accessToken",
    "TASKCLUSTER_CERTIFICATE": "certificate",
    "TASKCLUSTER_WORKER_LOCATION": "workerLocation",
}

SECRET_KEYS = ("accessToken", "certificate")

# Task users kept ready by the multiuser engine: a few cover bursts of claims; each idle one is
# an account and a home directory on the host.
MAX_TASK_USER_POOL = 64


class PrivateConfig:
    """Credentials; ``repr``/``str`` never show them (generic-worker's PrivateConfig)."""

    __slots__ = ("accessToken", "certificate")

    def __init__(self, accessToken: str = "", certificate: str = "") -> None:  # noqa: N803
        self.accessToken = accessToken
        self.certificate = certificate

    def __repr__(self) -> str:
        return "PrivateConfig(accessToken='*****', certificate='*****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PrivateConfig)
            and other.accessToken == self.accessToken
            and other.certificate == self.certificate
        )

    def __hash__(self) -> int:
        return hash((self.accessToken, self.certificate))


@dataclass(frozen=True)
class WorkerConfig:
    """A validated worker configuration; field names are generic-worker's JSON keys."""

    values: Mapping[str, Any]
    private: PrivateConfig = field(default_factory=PrivateConfig, repr=False)
    source: str = ""

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not dataclass fields: the GW keys.
        if name in SECRET_KEYS:
            return getattr(object.__getattribute__(self, "private"), name)
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"WorkerConfig(source={self.source!r}, values={dict(self.values)!r}, private=*****)"

    @property
    def task_queue_id(self) -> str:
        return f"{self.values['provisionerId']}/{self.values['workerType']}"

    @property
    def tasks_dir(self) -> Path:
        return Path(self.values["tasksDir"]).absolute()

    @property
    def caches_dir(self) -> Path:
        return Path(self.values["cachesDir"]).absolute()

    @property
    def downloads_dir(self) -> Path:
        return Path(self.values["downloadsDir"]).absolute()

    @property
    def credentials(self) -> dict[str, str]:
        """The worker's own credentials in ``taskcluster`` client form."""
        creds = {"clientId": self.values["clientId"], "accessToken": self.private.accessToken}
        if self.private.certificate:
            creds["certificate"] = self.private.certificate
        return creds

    def d2g(self, key: str) -> Any:
        return self.values["d2gConfig"].get(key, _D2G_DEFAULTS.get(key))

    def replace(self, **changes: Any) -> WorkerConfig:
        """A copy with some keys changed (not re-validated; for tests and ``tcworker local``)."""
        return from_mapping({**self.as_dict(include_secrets=True), **changes}, source=self.source)

    def as_dict(self, include_secrets: bool = False) -> dict[str, Any]:
        out = dict(self.values)
        for key in SECRET_KEYS:
            out[key] = getattr(self.private, key) if include_secrets else "*****"
        if not include_secrets:
            for key in FORWARDER_KEYS:
                if isinstance(out.get(key), dict) and out[key].get("token"):
                    out[key] = {**out[key], "token": "*****"}
        return out


def _default_tasks_dir(engine: str) -> str:
    return "/home" if engine == "multiuser" else "tasks"


def _type_name(t: type) -> str:
    return {str: "string", int: "integer", bool: "boolean", dict: "object"}[t]


def _check_type(key: str, value: Any) -> str | None:
    expected, _ = KEYS[key]
    ok = isinstance(value, expected)
    if expected is int and isinstance(value, bool):
        ok = False
    if expected is int and isinstance(value, float) and value.is_integer():
        ok = True  # JSON has one number type; 5.0 is an integer value
    if ok:
        return None
    return f"config key {key!r} must be a JSON {_type_name(expected)}, got {json.dumps(value)}"


def parse_overlay(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Check one source's keys and JSON types; raise exit-64 ``ConfigError`` on the first bad one."""
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in KEYS:
            raise ConfigError(f"{origin}: unknown config key {raw_key!r}", ExitCode.CANT_LOAD_CONFIG)
        problem = _check_type(key, value)
        if problem:
            raise ConfigError(f"{origin}: {problem}", ExitCode.CANT_LOAD_CONFIG)
        if KEYS[key][0] is int:
            value = int(value)
        if key == "d2gConfig":
            unknown = sorted(set(value) - set(_D2G_DEFAULTS))
            if unknown:
                raise ConfigError(
                    f"{origin}: unknown d2gConfig key(s) {', '.join(unknown)}", ExitCode.CANT_LOAD_CONFIG
                )
            value = {**_D2G_DEFAULTS, **value}
        out[key] = value
    return out


def read_file(path: Path) -> dict[str, Any]:
    """The config file as a checked overlay (exit 64 when unreadable / not a JSON object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"cannot read config file {str(path)!r}: {e.strerror or e}", ExitCode.CANT_LOAD_CONFIG
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text", ExitCode.CANT_LOAD_CONFIG) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not valid JSON: {e}", ExitCode.CANT_LOAD_CONFIG
        ) from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a JSON object", ExitCode.CANT_LOAD_CONFIG)
    return parse_overlay(data, f"config file {str(path)!r}")


def env_overlay(environ: Mapping[str, str]) -> dict[str, Any]:
    return {key: environ[var] for var, key in ENV_KEYS.items() if environ.get(var)}


def _port_ranges(values: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(name, first, last) port ranges in use: each capacity slot i uses base + 4·i (+1 for GET)."""
    cap = max(1, int(values["capacity"]))
    ranges: list[tuple[str, int, int]] = []
    if values["enableLiveLog"]:
        ranges.append(
            ("livelogPortBase", values["livelogPortBase"], values["livelogPortBase"] + 4 * (cap - 1) + 1)
        )
    if values["enableInteractive"]:
        ranges.append(
            ("interactivePort", values["interactivePort"], values["interactivePort"] + 4 * (cap - 1))
        )
    if values["enableTaskclusterProxy"]:
        p = values["taskclusterProxyPort"]
        ranges.append(("taskclusterProxyPort", p, p + 4 * (cap - 1)))
    return ranges


def validate(values: Mapping[str, Any], private: PrivateConfig) -> list[str]:
    """Every problem with the merged values, each naming its key (empty list = valid)."""
    problems: list[str] = []
    for key in REQUIRED:
        value = getattr(private, key) if key in SECRET_KEYS else values[key]
        if value == "":
            problems.append(f"config key {key!r} is required but missing or empty")
    for key in NON_EMPTY:
        if values[key] == "":
            problems.append(f"config key {key!r} must not be empty")
    for key in NON_NEGATIVE:
        if values[key] < 0:
            problems.append(f"config key {key!r} must be >= 0, got {values[key]}")
    if values["engine"] not in ENGINE_NAMES:
        problems.append(
            f"config key 'engine' must be one of {', '.join(ENGINE_NAMES)}, got {values['engine']!r}"
        )
    if not 1 <= values["capacity"] <= 255:
        problems.append(f"config key 'capacity' must be between 1 and 255, got {values['capacity']}")
    if values["engine"] == "multiuser" and values["capacity"] > 1 and not values["headlessTasks"]:
        problems.append("config key 'capacity' > 1 with the multiuser engine requires 'headlessTasks': true")
    if not 0 <= values["taskUserPoolSize"] <= MAX_TASK_USER_POOL:
        problems.append(
            f"config key 'taskUserPoolSize' must be between 0 and {MAX_TASK_USER_POOL}, "
            f"got {values['taskUserPoolSize']}"
        )
    if values["maxArtifactSizeMegabytes"] < 1:
        problems.append(
            f"config key 'maxArtifactSizeMegabytes' must be >= 1, got {values['maxArtifactSizeMegabytes']}"
        )
    if values["taskMaxProcesses"] < 1:
        problems.append(f"config key 'taskMaxProcesses' must be >= 1, got {values['taskMaxProcesses']}")
    if values["maxTaskRunTime"] < 1:
        problems.append(f"config key 'maxTaskRunTime' must be >= 1, got {values['maxTaskRunTime']}")
    if not 1 <= values["maxMemoryUsagePercent"] <= 100:
        problems.append("config key 'maxMemoryUsagePercent' must be between 1 and 100")
    for key in ("publicIP", "privateIP"):
        if values[key]:
            try:
                ipaddress.ip_address(values[key])
            except ValueError:
                problems.append(f"config key {key!r} is not an IP address: {values[key]!r}")
    for key, (pattern, rule) in IDENTIFIERS.items():
        if values[key] and not pattern.fullmatch(values[key]):
            problems.append(
                f"config key {key!r} is {values[key]!r}, but the queue only accepts {rule} "
                "(every claimWork would be refused with 400)"
            )
    root = values["rootURL"]
    if root and not root.startswith(("http://", "https://")):
        problems.append(f"config key 'rootURL' must be an http(s) URL, got {root!r}")
    if bool(values["wstAudience"]) != bool(values["wstServerURL"]):
        problems.append("config keys 'wstAudience' and 'wstServerURL' must be set together")
    for name, path in values["preloadedCaches"].items():
        if not name or not isinstance(path, str) or not os.path.isabs(path):
            problems.append(
                f"config key 'preloadedCaches': cache {name!r} must map to an absolute directory path, got {path!r}"
            )
    for key in FORWARDER_KEYS:
        forwarder = values[key]
        if not forwarder:
            continue
        upstream = forwarder.get("upstream")
        if not isinstance(upstream, str) or not upstream.startswith(("http://", "https://")):
            problems.append(f"config key {key!r}: 'upstream' must be an http(s) URL, got {upstream!r}")
        if not isinstance(forwarder.get("token", ""), str):
            problems.append(f"config key {key!r}: 'token' must be a string")
        unknown = sorted(set(forwarder) - {"upstream", "token"})
        if unknown:
            problems.append(f"config key {key!r}: unknown field(s) {unknown} (allowed: upstream, token)")
    ranges = _port_ranges(values)
    for name, first, last in ranges:
        if first < 0 or last > 65535:
            problems.append(f"config key {name!r}: ports {first}-{last} fall outside 0-65535")
    for i, (n1, a1, b1) in enumerate(ranges):
        for n2, a2, b2 in ranges[i + 1 :]:
            if a1 <= b2 and a2 <= b1:
                problems.append(f"config keys {n1!r} and {n2!r}: port ranges {a1}-{b1} and {a2}-{b2} overlap")
    return problems


def from_mapping(merged: Mapping[str, Any], source: str = "") -> WorkerConfig:
    """Build a config from already type-checked values overlaid on the defaults (no validation)."""
    values: dict[str, Any] = {key: default for key, (_, default) in KEYS.items()}
    values["d2gConfig"] = dict(_D2G_DEFAULTS)
    values.update(merged)
    if not values["tasksDir"]:
        values["tasksDir"] = _default_tasks_dir(values["engine"])
    private = PrivateConfig(values.pop("accessToken"), values.pop("certificate"))
    return WorkerConfig(values=values, private=private, source=source)


def load(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> WorkerConfig:
    """Defaults < file < ``TASKCLUSTER_*`` env < flags, then validate (all problems → exit 73)."""
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(read_file(path))
    merged.update(env_overlay(os.environ if environ is None else environ))
    if flags:
        merged.update(parse_overlay(flags, "command line"))
    config = from_mapping(merged, source=str(path) if path else "")
    problems = validate(config.values, config.private)
    if problems:
        where = f" in {str(path)!r}" if path else ""
        raise ConfigError(
            f"invalid worker configuration{where}:\n" + "\n".join(f"  - {p}" for p in problems),
            ExitCode.INVALID_CONFIG,
        )
    return config


def field_names() -> list[str]:
    """All accepted keys (for ``--help``)."""
    return sorted(KEYS)
