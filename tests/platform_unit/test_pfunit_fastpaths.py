"""The platform's per-request fast paths give exactly what the general code they skip gives.

Request bodies are parsed by orjson unless they could differ from the standard parser (integers
beyond 64 bits, deep nesting, anything orjson refuses); wire timestamps reuse the formatted second.
"""

from __future__ import annotations

import json
import random

import pytest

from tcworker import tctime
from tcworker.platform.app import _parse_json
from tcworker.platform.clock import from_ms, json_ms
from tcworker.platform.errors import MalformedPayload

JSON = "application/json"


@pytest.mark.parametrize(
    "body",
    [
        b'{"taskQueueId": "p/w", "payload": {"command": [["true"]]}, "retries": 5}',
        b'{"a": 1, "a": 2}',
        b'{"big": 123456789012345678901234567890, "neg": -98765432109876543210}',
        b'{"max64": 18446744073709551615, "min64": -9223372036854775808}',
        b'{"f": 1.5, "e": 1e300, "z": -0.0, "s": "\\u00e9\\ud83d\\ude00", "n": null}',
        '{"utf16": "\u00e9"}'.encode("utf-16"),
        b'\xef\xbb\xbf{"bom": true}',
        b"[" * 950 + b"]" * 950,
    ],
)
def test_valid_bodies_parse_as_the_standard_parser_does(body: bytes) -> None:
    expected = json.loads(body)
    got = _parse_json(body, JSON)
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)  # same types too (int stays int)


@pytest.mark.parametrize(
    "body",
    [b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\ud800"}', b'{"a": 1', b"", b"[" * 1010 + b"]" * 1010],
)
def test_invalid_bodies_are_refused_with_the_standard_message(body: bytes) -> None:
    with pytest.raises(MalformedPayload, match="request body is not valid JSON"):
        _parse_json(body, JSON)


def test_json_ms_matches_tctime_with_and_without_the_second_cache() -> None:
    rng = random.Random(15)
    samples = [0, 1, 999, 1000, 1_796_233_122_123, 253_402_300_799_999]
    samples += [rng.randrange(0, 253_402_300_800_000) for _ in range(2000)]
    samples += [1_796_233_122_000 + i for i in range(0, 3000, 7)]  # many in the same seconds
    for ms in samples:
        expected = tctime.to_json(from_ms(ms))
        assert json_ms(ms) == expected
        assert json_ms(ms) == expected  # second call: from the cache


@pytest.mark.parametrize(
    "value",
    [
        {"payload": {"n": 2**70, "m": -(2**64)}, "ok": [1, 2.5, "\u00e9"]},
        {"deep": json.loads("[" * 950 + "]" * 950)},
        {"plain": {"command": [["true"]], "maxRunTime": 600}},
    ],
)
def test_stored_definitions_read_back_exactly(value: object) -> None:
    from tcworker.platform import jsonwire

    text = jsonwire.dumps_text(value)
    back = jsonwire.loads_stored(text)
    assert back == value
    assert json.dumps(back) == json.dumps(value)
