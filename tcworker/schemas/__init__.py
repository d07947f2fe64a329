"""The payload JSON schemas this package ships, loaded from package data.

``generic-worker-insecure_posix.json`` / ``generic-worker-multiuser_posix.json`` are
generic-worker's v106 payload schemas (``$schema`` set to draft-06; ``features.generateCertificate``
added to both and ``features.chainOfTrust`` to the insecure one, which the docker engine also uses);
``docker-worker-v1-payload.json`` is docker-worker's historical v1 schema extended with
``encryptedEnv``, artifact type ``volume`` and ``capabilities.disableSeccomp``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

GENERIC_SCHEMA_FILES = {
    "simple": "generic-worker-insecure_posix.json",
    "docker": "generic-worker-insecure_posix.json",
    "multiuser": "generic-worker-multiuser_posix.json",
}
DOCKER_SCHEMA_FILE = "docker-worker-v1-payload.json"


@cache
def _load(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    """A fresh copy of the schema file ``name`` (callers may not share mutable state)."""
    data: dict[str, Any] = json.loads(_load(name))
    return data


def payload_schema(engine: str) -> dict[str, Any]:
    """What ``show-payload-schema`` prints: generic-worker's ``oneOf`` (GW payload | DW payload)."""
    return load(GENERIC_SCHEMA_FILES[engine])


def generic_payload_schema(engine: str) -> dict[str, Any]:
    """The generic-worker branch alone (what a payload without ``image`` is validated against)."""
    full = load(GENERIC_SCHEMA_FILES[engine])
    branch: dict[str, Any] = dict(full["oneOf"][0])
    branch["$schema"] = full["$schema"]
    branch["definitions"] = full.get("definitions", {})
    return branch


def docker_payload_schema() -> dict[str, Any]:
    return load(DOCKER_SCHEMA_FILE)
