"""docker-worker's ``encryptedEnv``: decrypt, validate and mask secret environment variables.

Each payload element is base64 of an OpenPGP message encrypted to the worker's public key
(spec/worker.md §3.4). The plaintext is JSON::

    {"messageVersion": 1, "taskId": "<taskId>", "startTime": <ms>, "endTime": <ms>,
     "name": "SECRET_TOKEN", "value": "<secret>"}

The taskId and the time window bind a message to one task, so a message copied into another task
(or replayed after its window) is refused. Every refusal is ``MalformedPayload`` with
``secret data violation -- <why>; incidentId: <uuid>`` (docker-worker resolved these runs
``failed``; issue 5 asks for malformed-payload, since retrying cannot help). The incident id is
also written to the worker log with the reason, so an operator can match a user's report without
the secret ever being logged.

Making a message with GnuPG (proved by ``tests/docker_features/test_encrypted_env.py``), after
``gpg --import`` of the worker's public key (``PrivateKey.public_key()`` prints it)::

    printf '%s' '{"messageVersion":1,"taskId":"<taskId>","startTime":<ms>,"endTime":<ms>,
                  "name":"SECRET_TOKEN","value":"s3cr3t"}' \\
      | gpg --batch --trust-model always --encrypt --recipient <worker key id> \\
      | base64 -w0

The worker's ASCII-armored *secret* key file is named by config key ``openpgpPrivateKeyLocation``
(export it with ``gpg --armor --export-secret-keys <key id>``; it must not be passphrase-protected
unless the caller passes the passphrase).

Cost: one RSA/ECDH decryption per message (milliseconds), so callers may run ``decrypt_env`` on
the event loop; use ``asyncio.to_thread`` if a task may carry very many messages. Never ``repr`` a
pysequoia key object: its repr prints the armored secret key. ``PrivateKey`` wraps it with a
redacted repr for that reason.

Decrypted values must not reach the task log: the engine hands them to the task log's one masker
(``TaskLog.add_secrets``, ``tcworker.logmask``), which replaces them and their URL-encoded and
base64 forms with ``[secret]``, also when a value is split across two writes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pysequoia

from tcworker.config import WorkerConfig
from tcworker.errors import ConfigError, MalformedPayload
from tcworker.features.base import Feature, RunHandle, TaskFeature
from tcworker.logmask import MASK, MIN_MASKED_LENGTH, SecretMasker  # noqa: F401 - re-exported
from tcworker.tcapi.clients import Clients

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
RESERVED_NAMES = frozenset({"TASK_ID", "RUN_ID"})

_ENV_NAME = re.compile(r"^[^=\x00]+$")


class PrivateKey:
    """The worker's OpenPGP secret key, with a repr that never shows key material."""

    __slots__ = ("_tsk", "_passphrase", "fingerprint")

    def __init__(self, tsk: Any, passphrase: str | None, fingerprint: str) -> None:
        self._tsk = tsk
        self._passphrase = passphrase
        self.fingerprint = fingerprint

    def public_key(self) -> str:
        """The ASCII-armored public key, to publish for task authors (``gpg --import`` it)."""
        return str(self._tsk.extract_certificate())

    def decryptor(self) -> Any:
        return self._tsk.decryptor(self._passphrase) if self._passphrase else self._tsk.decryptor()

    def __repr__(self) -> str:
        return f"PrivateKey(fingerprint={self.fingerprint!r})"

    __str__ = __repr__


def _first_line(exc: BaseException) -> str:
    """pysequoia errors carry a Rust backtrace after the first line; keep only the message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_private_key(path: str | Path, passphrase: str | None = None) -> PrivateKey:
    """Read an (ASCII-armored or binary) OpenPGP secret key; ``ConfigError`` when it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"openpgpPrivateKeyLocation: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        tsk = pysequoia.Tsk.from_bytes(data)
        fingerprint = str(tsk.extract_certificate().fingerprint)
    except Exception as exc:
        raise ConfigError(
            f"openpgpPrivateKeyLocation: {path} is not an OpenPGP key: {_first_line(exc)}"
        ) from exc
    try:
        tsk.decryptor(passphrase) if passphrase else tsk.decryptor()
    except Exception as exc:
        raise ConfigError(
            f"openpgpPrivateKeyLocation: {path} has no usable secret encryption key ({_first_line(exc)}); "
            "is it only the public key? Export the secret key with gpg --armor --export-secret-keys <key id>"
        ) from exc
    return PrivateKey(tsk, passphrase, fingerprint)


def _violation(why: str, *, task_id: str, index: int) -> MalformedPayload:
    incident = str(uuid.uuid4())
    log.warning(
        "encryptedEnv violation: %s (task %s, message %d, incidentId %s)",
        why,
        task_id,
        index,
        incident,
        extra={"taskId": task_id, "incidentId": incident},
    )
    return MalformedPayload(f"secret data violation -- {why}; incidentId: {incident}")


def _decrypt_one(message: str, key: PrivateKey, *, task_id: str, index: int) -> dict[str, Any]:
    where = f"encryptedEnv[{index}]"
    if not isinstance(message, str):
        raise _violation(f"{where} is not a string", task_id=task_id, index=index)
    try:
        # gpg | base64 wraps lines; whitespace is not part of the encoding.
        blob = base64.b64decode("".join(message.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _violation(f"{where} is not valid base64", task_id=task_id, index=index) from None
    try:
        plaintext = pysequoia.decrypt(blob, decryptor=key.decryptor()).bytes
    except Exception as exc:
        raise _violation(
            f"{where} could not be decrypted with the worker's key ({_first_line(exc)})",
            task_id=task_id,
            index=index,
        ) from None
    try:
        doc = json.loads(plaintext or b"")
    except (UnicodeDecodeError, ValueError):
        raise _violation(f"{where} does not decrypt to JSON", task_id=task_id, index=index) from None
    if not isinstance(doc, dict):
        raise _violation(f"{where} does not decrypt to a JSON object", task_id=task_id, index=index)
    return doc


def decrypt_env(
    messages: Sequence[str],
    *,
    task_id: str,
    payload_env: Mapping[str, str],
    key: PrivateKey,
    now_ms: int | None = None,
) -> dict[str, str]:
    """Decrypt and validate every message; return the variables to add to the container env.

    All messages are checked before anything is returned, in payload order; the first violation
    raises. Checks (docker-worker's, plus type checks): messageVersion 1; taskId equals the running
    task; startTime ≤ now ≤ endTime; name is a string that is not TASK_ID/RUN_ID and not already in
    ``payload.env`` or an earlier message; value is a string.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    result: dict[str, str] = {}
    for index, message in enumerate(messages):
        doc = _decrypt_one(message, key, task_id=task_id, index=index)
        where = f"encryptedEnv[{index}]"

        def bad(why: str, index: int = index) -> MalformedPayload:
            return _violation(why, task_id=task_id, index=index)

        if doc.get("messageVersion") != MESSAGE_VERSION:
            raise bad(f"{where}: messageVersion must be {MESSAGE_VERSION}, got {doc.get('messageVersion')!r}")
        if doc.get("taskId") != task_id:
            raise bad(f"{where} was made for task {doc.get('taskId')!r}, not for this task {task_id}")
        start, end = doc.get("startTime"), doc.get("endTime")
        if (
            not isinstance(start, int)
            or not isinstance(end, int)
            or isinstance(start, bool)
            or isinstance(end, bool)
        ):
            raise bad(f"{where}: startTime and endTime must be integers (ms since epoch)")
        if start > now:
            raise bad(f"{where} is not valid yet (startTime {start} is after now {now})")
        if now > end:
            raise bad(f"{where} has expired (endTime {end} is before now {now})")
        name, value = doc.get("name"), doc.get("value")
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise bad(f"{where}: name must be a non-empty string without '=' or NUL")
        if not isinstance(value, str):
            raise bad(f"{where}: value of {name} must be a string")
        if name in RESERVED_NAMES:
            raise bad(f"{where}: {name} is reserved and cannot be set by encryptedEnv")
        if name in payload_env:
            raise bad(f"{where}: {name} is already set in payload.env")
        if name in result:
            raise bad(f"{where}: {name} is set by more than one encryptedEnv message")
        result[name] = value
    return result


def secret_values(decrypted: Mapping[str, str]) -> list[str]:
    """The values worth masking: each value and each line of a multi-line value, long enough to matter."""
    found: set[str] = set()
    for value in decrypted.values():
        for candidate in (value, *value.splitlines()):
            candidate = candidate.strip("\r\n")
            if len(candidate) >= MIN_MASKED_LENGTH:
                found.add(candidate)
    return sorted(found, key=lambda v: (-len(v), v))


class EncryptedEnvFeature(Feature):
    """The feature: the worker's key is loaded once; each run's messages are decrypted and checked
    at admission (before the image is fetched) and become environment variables of the commands,
    masked in the task log."""

    name = "encryptedEnv"

    def __init__(self) -> None:
        self.key: PrivateKey | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if config.openpgpPrivateKeyLocation:
            self.key = await asyncio.to_thread(load_private_key, config.openpgpPrivateKeyLocation)

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if run.payload_kind != "docker" or not run.payload.get("encryptedEnv"):
            return None
        return _EncryptedEnv(self, run)


class _EncryptedEnv(TaskFeature):
    def __init__(self, feature: EncryptedEnvFeature, run: RunHandle) -> None:
        self.feature = feature
        self.run = run
        self.values: dict[str, str] = {}

    async def admit(self) -> None:
        if self.feature.key is None:
            raise MalformedPayload(
                "payload.encryptedEnv needs the worker's OpenPGP private key, but this worker has none "
                "(config openpgpPrivateKeyLocation is empty)"
            )
        self.values = decrypt_env(
            list(self.run.payload["encryptedEnv"]),
            task_id=self.run.task_id,
            payload_env=self.run.payload.get("env") or {},
            key=self.feature.key,
        )
        self.run.log.add_secrets(list(self.values.values()))
        self.run.log.info(f"encryptedEnv: decrypted {', '.join(sorted(self.values))}")

    async def start(self) -> None:
        self.run.feature_env.update(self.values)
