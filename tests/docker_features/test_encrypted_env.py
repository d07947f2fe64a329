"""encryptedEnv with messages made by the real ``gpg --encrypt``, decrypted by pysequoia."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import slugid
from helpers.gpg import GPG, GpgKey, make_gpg_key
from hypothesis import given, settings
from hypothesis import strategies as st

from tcworker.errors import ConfigError, MalformedPayload
from tcworker.features.encrypted_env import (
    SecretMasker,
    decrypt_env,
    load_private_key,
    secret_values,
)

SECRET = "s3cr3t-v@lue with spaces"


def now_ms() -> int:
    return int(time.time() * 1000)


def doc(task_id: str, **over: Any) -> dict[str, Any]:
    base = {
        "messageVersion": 1,
        "taskId": task_id,
        "startTime": now_ms() - 60_000,
        "endTime": now_ms() + 600_000,
        "name": "SECRET_TOKEN",
        "value": SECRET,
    }
    base.update(over)
    return base


@pytest.fixture(scope="module")
def key(gpg_key: GpgKey):  # noqa: ANN201 - PrivateKey
    return load_private_key(gpg_key.secret_key_file)


def refused(
    messages: list[str], task_id: str, key: Any, *, env: dict[str, str] | None = None, **kw: Any
) -> str:
    with pytest.raises(MalformedPayload) as info:
        decrypt_env(messages, task_id=task_id, payload_env=env or {}, key=key, **kw)
    text = str(info.value)
    assert text.startswith("secret data violation -- ")
    assert "; incidentId: " in text
    assert SECRET not in text
    return text


def test_round_trip_with_real_gpg(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    env = decrypt_env(
        [gpg_key.message(doc(tid)), gpg_key.message(doc(tid, name="OTHER", value="two"))],
        task_id=tid,
        payload_env={"PLAIN": "x"},
        key=key,
    )
    assert env == {"SECRET_TOKEN": SECRET, "OTHER": "two"}


def test_armored_and_line_wrapped_messages_are_accepted(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    armored = gpg_key.message(doc(tid), armor=True)
    wrapped_bytes = gpg_key.encrypt(json.dumps(doc(tid, name="WRAPPED")).encode())
    wrapped = base64.encodebytes(wrapped_bytes).decode()  # 76-char lines, as `gpg | base64` gives
    assert "\n" in wrapped.strip()
    got = decrypt_env([armored, wrapped], task_id=tid, payload_env={}, key=key)
    assert got == {"SECRET_TOKEN": SECRET, "WRAPPED": SECRET}


def test_documented_shell_recipe(gpg_key: GpgKey, key: Any) -> None:
    """The recipe of the module docstring, run as a user would run it."""
    tid = slugid.nice()
    start, end = now_ms() - 1000, now_ms() + 60_000
    plaintext = json.dumps(
        {
            "messageVersion": 1,
            "taskId": tid,
            "startTime": start,
            "endTime": end,
            "name": "SECRET_TOKEN",
            "value": "s3cr3t",
        }
    )
    script = (
        f"printf '%s' '{plaintext}' | {GPG} --batch --trust-model always --encrypt "
        f"--recipient {gpg_key.fingerprint} | base64 -w0"
    )
    msg = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], env=gpg_key.env(), capture_output=True, check=True
    )
    assert decrypt_env([msg.stdout.decode()], task_id=tid, payload_env={}, key=key) == {
        "SECRET_TOKEN": "s3cr3t"
    }


def test_rsa_key_from_gpg_defaults_works() -> None:
    """gpg's default algorithm (RSA) as well as the ECC key of the shared fixture."""
    gen = make_gpg_key("rsa2048")
    rsa = next(gen)
    try:
        tid = slugid.nice()
        got = decrypt_env(
            [rsa.message(doc(tid))], task_id=tid, payload_env={}, key=load_private_key(rsa.secret_key_file)
        )
        assert got == {"SECRET_TOKEN": SECRET}
    finally:
        gen.close()


def test_message_for_another_task_is_refused(gpg_key: GpgKey, key: Any) -> None:
    original, replayed_into = slugid.nice(), slugid.nice()
    message = gpg_key.message(doc(original))
    assert decrypt_env([message], task_id=original, payload_env={}, key=key) == {"SECRET_TOKEN": SECRET}
    text = refused([message], replayed_into, key)
    assert original in text and replayed_into in text


def test_time_window(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    later = gpg_key.message(doc(tid, startTime=now_ms() + 3_600_000, endTime=now_ms() + 7_200_000))
    assert "not valid yet" in refused([later], tid, key)
    expired = gpg_key.message(doc(tid, startTime=now_ms() - 7_200_000, endTime=now_ms() - 3_600_000))
    assert "expired" in refused([expired], tid, key)
    # now_ms lets the caller pin "now": the same message is fine inside its window.
    start = now_ms()
    pinned = gpg_key.message(doc(tid, startTime=start, endTime=start + 10))
    assert decrypt_env([pinned], task_id=tid, payload_env={}, key=key, now_ms=start + 10) == {
        "SECRET_TOKEN": SECRET
    }
    assert "expired" in refused([pinned], tid, key, now_ms=start + 11)
    assert "not valid yet" in refused([pinned], tid, key, now_ms=start - 1)


@pytest.mark.parametrize("name", ["TASK_ID", "RUN_ID"])
def test_reserved_names_refused(gpg_key: GpgKey, key: Any, name: str) -> None:
    tid = slugid.nice()
    assert "reserved" in refused([gpg_key.message(doc(tid, name=name))], tid, key)


def test_name_clash_with_payload_env_refused(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    assert "already set in payload.env" in refused(
        [gpg_key.message(doc(tid))], tid, key, env={"SECRET_TOKEN": "plain"}
    )


def test_same_name_twice_refused(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    msg = gpg_key.message(doc(tid))
    assert "more than one" in refused([msg, msg], tid, key)


@pytest.mark.parametrize(
    "over, why",
    [
        ({"messageVersion": 2}, "messageVersion must be 1"),
        ({"messageVersion": "1"}, "messageVersion must be 1"),
        ({"startTime": "yesterday"}, "must be integers"),
        ({"endTime": True}, "must be integers"),
        ({"name": ""}, "name must be"),
        ({"name": "A=B"}, "name must be"),
        ({"value": 5}, "must be a string"),
    ],
)
def test_bad_documents_refused(gpg_key: GpgKey, key: Any, over: dict[str, Any], why: str) -> None:
    tid = slugid.nice()
    assert why in refused([gpg_key.message(doc(tid, **over))], tid, key)


def test_garbage_refused(gpg_key: GpgKey, other_gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    assert "not valid base64" in refused(["!!! not base64 !!!"], tid, key)
    assert "could not be decrypted" in refused([base64.b64encode(b"garbage" * 20).decode()], tid, key)
    # A real OpenPGP message, but for somebody else's key.
    assert "could not be decrypted" in refused([other_gpg_key.message(doc(tid))], tid, key)
    not_json = base64.b64encode(gpg_key.encrypt(b"SECRET_TOKEN=x")).decode()
    assert "does not decrypt to JSON" in refused([not_json], tid, key)
    a_list = base64.b64encode(gpg_key.encrypt(b"[1, 2]")).decode()
    assert "JSON object" in refused([a_list], tid, key)


def test_first_violation_wins_and_nothing_is_returned(gpg_key: GpgKey, key: Any) -> None:
    tid = slugid.nice()
    good = gpg_key.message(doc(tid, name="GOOD"))
    bad = gpg_key.message(doc(slugid.nice()))
    assert "encryptedEnv[1]" in refused([good, bad], tid, key)


def test_incident_is_logged_without_the_secret(
    gpg_key: GpgKey, key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tid = slugid.nice()
    with caplog.at_level(logging.WARNING, logger="tcworker.features.encrypted_env"):
        text = refused([gpg_key.message(doc(tid, name="TASK_ID"))], tid, key)
    incident = text.rsplit("incidentId: ", 1)[1]
    assert incident in caplog.text and tid in caplog.text
    assert SECRET not in caplog.text


def test_load_private_key_errors(tmp_path: Path, gpg_key: GpgKey) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path / "missing.asc")
    junk = tmp_path / "junk.asc"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not an OpenPGP key"):
        load_private_key(junk)
    with pytest.raises(ConfigError, match="no usable secret encryption key.*only the public key"):
        load_private_key(gpg_key.public_key_file)


def test_private_key_repr_hides_key_material(gpg_key: GpgKey, key: Any) -> None:
    armored = gpg_key.secret_key_file.read_text()
    body_line = armored.splitlines()[3]
    for text in (repr(key), str(key), f"{key}"):
        assert "PRIVATE KEY" not in text and body_line not in text
        assert gpg_key.fingerprint.lower() in text.lower()


# ---- masking ---------------------------------------------------------------------------------


def test_secret_values_skip_short_ones_and_split_lines() -> None:
    assert secret_values({"A": "abc", "B": "line-one\nline-two", "C": "longer-secret"}) == [
        "line-one\nline-two",
        "longer-secret",
        "line-one",
        "line-two",
    ]


def test_mask_whole_buffer() -> None:
    masker = SecretMasker(["hunter22", "abc"])
    assert masker.mask(b"pw=hunter22; abc") == b"pw=[secret]; abc"
    assert not SecretMasker(["ab"]) and SecretMasker(["abcd"])


def test_stream_masks_secret_split_across_chunks() -> None:
    masker = SecretMasker(["hunter22"])
    out = masker.feed(b"password: hun") + masker.feed(b"ter22\nnext line\n") + masker.flush()
    assert out == b"password: [secret]\nnext line\n"


def test_stream_does_not_hold_back_ordinary_output() -> None:
    masker = SecretMasker(["hunter22"])
    assert masker.feed(b"hello world\n") == b"hello world\n"
    assert masker.feed(b"ends with hu") == b"ends with "  # 'hu' might start the secret
    assert masker.feed(b"m\n") == b"hum\n"


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet="abx\n", min_size=1, max_size=8), min_size=1, max_size=3),
    data=st.text(alphabet="abx\n", max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_stream_equals_whole_buffer(secrets: list[str], data: str, cuts: list[int]) -> None:
    whole = SecretMasker(secrets).mask(data.encode())
    stream = SecretMasker(secrets)
    raw = data.encode()
    bounds = sorted({0, len(raw), *(c for c in cuts if c <= len(raw))})
    out = b"".join(stream.feed(raw[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)) + stream.flush()
    assert out == whole


def test_published_public_key_works_for_task_authors(key: Any, tmp_path: Path) -> None:
    """An author imports the key the worker publishes into their own keyring and encrypts with gpg."""
    public = key.public_key()
    assert public.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----") and "PRIVATE" not in public
    gen = make_gpg_key("future-default")  # the author's own keyring (with an unrelated key of theirs)
    author = next(gen)
    try:
        author.gpg("--import", input=public.encode())
        tid = slugid.nice()
        plaintext = json.dumps(doc(tid)).encode()
        blob = author.gpg(
            "--trust-model", "always", "--encrypt", "--recipient", key.fingerprint, input=plaintext
        )
        got = decrypt_env([base64.b64encode(blob).decode()], task_id=tid, payload_env={}, key=key)
        assert got == {"SECRET_TOKEN": SECRET}
    finally:
        gen.close()
