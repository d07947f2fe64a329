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


def _automaton_only(secrets: list[str]) -> SecretMasker:
    """A masker that skips the ``bytes.find`` stage: the automaton from the first byte."""
    masker = SecretMasker(secrets)
    masker._find_budget = -1
    return masker


@st.composite
def _secrets_and_log(draw: st.DrawFn) -> tuple[list[str], bytes]:
    """Secrets over a two-letter alphabet (prefixes and overlaps of each other are common) and a
    log made of them — whole, cut, back to back — and filler."""
    secrets = draw(st.lists(st.text(alphabet="ab", min_size=4, max_size=8), min_size=1, max_size=6))
    piece = st.one_of(
        st.sampled_from(secrets),
        st.sampled_from(secrets).flatmap(lambda v: st.sampled_from([v[1:], v[:-1], v + v[:2]])),
        st.text(alphabet="abc", max_size=5),
    )
    return secrets, "".join(draw(st.lists(piece, max_size=40))).encode()


@settings(max_examples=300, deadline=None)
@given(case=_secrets_and_log(), cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=20))
def test_the_find_stage_masks_as_the_automaton_does(case: tuple[list[str], bytes], cuts: list[int]) -> None:
    """Overlapping secrets: the ``bytes.find`` stage picks the same leftmost-longest spans as the
    automaton, for a whole buffer and for a stream."""
    secrets, payload = case
    expected = _automaton_only(secrets).mask(payload)
    found = SecretMasker(secrets)
    assert found.mask(payload) == expected
    assert found._automaton is None  # it was the find stage that answered
    stream, out, pos = SecretMasker(secrets), b"", 0
    for cut in cuts:
        out += stream.feed(payload[pos : pos + cut])
        pos += cut
    assert out + stream.feed(payload[pos:]) + stream.flush() == expected


def test_a_small_log_never_builds_the_automaton_a_big_one_does() -> None:
    masker = SecretMasker([TOKEN], encoded=True)
    line = b"ordinary output line\n" * 50
    assert masker.feed(line + TOKEN.encode() + b"\n") == line + b"[secret]\n"
    assert masker._automaton is None
    chunk = (b"x" * 65535 + b"\n") * 4  # past FIND_BUDGET together with the above
    assert masker.feed(chunk) == chunk
    assert masker.feed(b"then " + TOKEN.encode() + b"\n") == b"then [secret]\n"
    assert masker._automaton is not None


def test_many_matches_hand_over_to_the_automaton_within_one_buffer() -> None:
    """Each match of the find stage costs a pass over the secrets: past FIND_MATCHES the rest of
    the same buffer goes to the automaton, with nothing masked twice or missed."""
    masker = SecretMasker(["hunter22", "hunter2222"])
    payload = b"".join(b"%d:hunter22%s " % (i, b"22" if i % 3 == 0 else b"") for i in range(1000))
    expected = _automaton_only(["hunter22", "hunter2222"]).mask(payload)
    assert masker.mask(payload) == expected
    assert expected.count(b"[secret]") == 1000 and b"hunter" not in expected
    assert masker._automaton is not None
