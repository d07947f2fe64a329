"""The task log's one masker (tcworker.logmask): encoded forms, streaming equals whole-buffer."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from tcworker.logmask import SecretMasker

TOKEN = "Zm9vYmFyLXRva2VuLXdpdGgtJS1hbmQtKy1zaWducw"
SPECIAL = "p@ss w/rd+%&=?"


def test_raw_url_and_base64_forms_are_masked() -> None:
    masker = SecretMasker([TOKEN, SPECIAL], encoded=True)
    for secret in (TOKEN, SPECIAL):
        raw = secret.encode()
        for form in (
            raw,
            quote(secret, safe="").encode(),
            quote_plus(secret).encode(),
            base64.b64encode(raw),
            base64.urlsafe_b64encode(raw),
            base64.b64encode(raw).rstrip(b"="),
        ):
            out = masker.mask(b"before " + form + b" after")
            assert form not in out and b"[secret]" in out, form


def test_base64_inside_a_bigger_blob_at_every_alignment() -> None:
    masker = SecretMasker([TOKEN], encoded=True)
    for prefix in (b"", b"x", b"xy", b"xyz", b"wxyz"):
        blob = base64.b64encode(prefix + TOKEN.encode() + b"!tail")
        out = masker.mask(blob)
        assert b"[secret]" in out and blob not in out
        assert base64.b64encode(TOKEN.encode())[4:-4] not in out


def test_plain_masker_masks_only_the_raw_value() -> None:
    masker = SecretMasker([TOKEN])
    assert masker.mask(base64.b64encode(TOKEN.encode())) == base64.b64encode(TOKEN.encode())
    assert masker.mask(TOKEN.encode()) == b"[secret]"


def test_short_values_are_not_masked_and_ordinary_output_is_not_held_back() -> None:
    masker = SecretMasker(["abc", TOKEN], encoded=True)
    assert masker.mask(b"abc") == b"abc"
    assert masker.feed(b"line 1\n") == b"line 1\n"
    assert masker.feed(b"ends with " + TOKEN[:5].encode()) == b"ends with "
    assert masker.flush() == TOKEN[:5].encode()


@settings(max_examples=150, deadline=None)
@given(
    data=st.text(alphabet="Zm9vYhunter2 \n=+", max_size=400),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_stream_equals_whole_buffer(data: str, cuts: list[int]) -> None:
    payload = data.encode()
    payload = payload + TOKEN.encode() + payload + base64.b64encode(b"hunter22") + payload
    secrets = [TOKEN, "hunter22", "Zm9vYm"]
    whole = SecretMasker(secrets, encoded=True).mask(payload)
    stream = SecretMasker(secrets, encoded=True)
    out, pos = b"", 0
    for cut in cuts:
        out += stream.feed(payload[pos : pos + cut])
        pos += cut
    out += stream.feed(payload[pos:]) + stream.flush()
    assert out == whole
