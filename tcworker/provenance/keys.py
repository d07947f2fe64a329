"""The worker's ed25519 signing key, and public keys given to verifiers.

generic-worker stores the 32-byte seed, base64 (``new-ed25519-keypair``); docker-worker stored
the 64-byte NaCl secret key (seed ‖ public key). Both are accepted — the first 32 bytes are the
seed either way (spec/worker.md §4.4, §4.5) — so one pool can move between worker
implementations without a new key. Public keys are base64 of the 32 raw bytes, exactly as
``tcworker new-ed25519-keypair`` prints them and as scriptworker's config lists them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class UnusableKey(ValueError):
    """A key file or key string that cannot be used (the message says why, never the key)."""


def load_signing_key(location: str | Path) -> Ed25519PrivateKey:
    """Read ``ed25519SigningKeyLocation``: base64 of a 32-byte seed or a 64-byte NaCl secret key."""
    try:
        raw = Path(location).read_bytes()
    except OSError as e:
        raise UnusableKey(f"cannot read the ed25519 signing key {str(location)!r}: {e.strerror}") from e
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) not in (32, 64):
        raise UnusableKey(
            f"the ed25519 signing key {str(location)!r} is not base64 of a 32-byte seed "
            "(or of a 64-byte NaCl secret key)"
        )
    return Ed25519PrivateKey.from_private_bytes(decoded[:32])


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as ``new-ed25519-keypair`` prints it."""
    return base64.b64encode(public_bytes(key)).decode()


def parse_public_key(value: str) -> Ed25519PublicKey:
    """``--public-key``: the base64 key itself, or the path of a file holding it."""
    text = value.strip()
    candidate = Path(text)
    if len(text) != 44 or candidate.is_file():
        try:
            text = candidate.read_text().strip()
        except OSError as e:
            raise UnusableKey(
                f"{value!r} is neither a base64 ed25519 public key nor a readable file: {e}"
            ) from e
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UnusableKey("the public key must be base64 of 32 bytes (as new-ed25519-keypair prints it)")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def keyid(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The key id DSSE/in-toto tooling derives for an ed25519 key: sha256 of the canonical JSON of
    ``{"keytype", "scheme", "keyval": {"public": hex}}`` (securesystemslib's default key id)."""
    doc = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public_bytes(key).hex()}}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
