"""The pieces the features sign with, checked in isolation: key formats of both worker
implementations, the additional-data merge rule, DSSE's pre-authentication encoding and the
envelope round trip (the end-to-end tests check the same artifacts with independent verifiers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tcworker.provenance import certificate, slsa
from tcworker.provenance.keys import (
    UnusableKey,
    load_signing_key,
    parse_public_key,
    public_bytes,
    public_key_b64,
)


def test_generic_worker_seed_and_docker_worker_nacl_key_give_the_same_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    (tmp_path / "gw").write_bytes(base64.b64encode(seed))
    (tmp_path / "dw").write_bytes(base64.b64encode(seed + public_bytes(key)) + b"\n")
    for name in ("gw", "dw"):
        assert public_key_b64(load_signing_key(tmp_path / name)) == public_key_b64(key)


@pytest.mark.parametrize("content", [b"", b"not base64!", base64.b64encode(b"x" * 31)])
def test_unusable_signing_key_says_why_without_showing_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(UnusableKey, match="not base64 of a 32-byte seed") as info:
        load_signing_key(tmp_path / "k")
    assert content.decode(errors="replace") not in str(info.value) or not content


def test_public_key_from_string_or_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    b64 = public_key_b64(key)
    (tmp_path / "pub").write_text(b64)
    assert public_bytes(parse_public_key(b64)) == public_bytes(key)
    assert public_bytes(parse_public_key(str(tmp_path / "pub"))) == public_bytes(key)
    with pytest.raises(UnusableKey):
        parse_public_key(str(tmp_path / "missing"))


def test_additional_data_adds_keys_but_never_overrides_the_worker() -> None:
    cert = {"taskId": "T", "task": {"schedulerId": "-", "payload": {}}, "artifacts": {}}
    extra = {"taskId": "forged", "foo": 1, "task": {"schedulerId": "forged", "foo": 2}, "artifacts": "x"}
    merged = certificate.merge_additional(extra, cert)
    assert merged == {
        "taskId": "T",
        "foo": 1,
        "task": {"schedulerId": "-", "payload": {}, "foo": 2},
        "artifacts": {},
    }


def test_serialisation_is_sorted_indented_and_stable() -> None:
    doc = {"b": 1, "a": {"d": 2, "c": "é"}}
    body = certificate.serialise(doc)
    assert body == certificate.serialise(json.loads(body))
    assert body.startswith(b'{\n  "a": {\n    "c": "\\u00e9"') and body.endswith(b"}\n")


def test_dsse_pae_matches_the_specification_example() -> None:
    # From the DSSE v1 protocol document: PAE("http://example.com/HelloWorld", "hello world").
    assert slsa.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_envelope_opens_only_with_its_key_and_untouched_payload() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = slsa.envelope({"_type": slsa.STATEMENT_TYPE, "subject": []}, key)
    assert slsa.open_envelope(env, key.public_key()) == {"_type": slsa.STATEMENT_TYPE, "subject": []}
    assert slsa.open_envelope(env, other.public_key()) is None
    tampered = dict(env, payload=base64.b64encode(b'{"_type": "x"}').decode())
    assert slsa.open_envelope(tampered, key.public_key()) is None


def test_image_dependencies_name_the_image_and_its_tarball() -> None:
    facts = {"imageHash": "sha256:" + "a" * 64, "imageArtifactHash": "sha256:" + "b" * 64}
    spec = {"type": "task-image", "taskId": "T1", "path": "public/image.tar"}
    assert slsa.image_dependencies(facts, spec, "http://tc/") == [
        {"name": "image", "digest": {"sha256": "a" * 64}},
        {
            "name": "image-tarball",
            "uri": "http://tc/api/queue/v1/task/T1/artifacts/public/image.tar",
            "digest": {"sha256": "b" * 64},
        },
    ]
    plain = {"imageHash": "sha256:" + "c" * 64}
    assert slsa.image_dependencies(plain, "busybox:latest", "http://tc") == [
        {"name": "image", "uri": "docker-image:busybox:latest", "digest": {"sha256": "c" * 64}}
    ]
    assert slsa.image_dependencies({}, "busybox", "http://tc") == []
