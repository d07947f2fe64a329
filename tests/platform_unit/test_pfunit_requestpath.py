"""The request path's faster equivalents give exactly what the code they replaced gave (issue 15).

``macs.hmac_sha256`` against ``hmac.digest``; certificate seeds from ``macs.random_bytes`` are 44
URL-safe characters and never repeat; scope templates rendered through ``str.format_map`` against
the regex substitution they replaced, including the cases that must keep the regex (placeholder
names ``format_map`` would read as attribute or index access, literal braces).
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Any

import pytest

from tcworker import macs
from tcworker.platform.api import render
from tcworker.platform.auth import tempcreds

_PLACEHOLDER = re.compile(r"<([^<>]+)>")


def _render_by_regex(expr: Any, params: dict[str, Any]) -> Any:
    """The renderer as it was before: one regex substitution per string."""
    if isinstance(expr, str):
        return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), expr)
    if "AllOf" in expr or "AnyOf" in expr:
        key = "AllOf" if "AllOf" in expr else "AnyOf"
        out: list[Any] = []
        for sub in expr[key]:
            value = _render_by_regex(sub, params)
            out.extend(value if isinstance(value, list) else [value])
        return {key: out}
    if "for" in expr:
        return [
            _PLACEHOLDER.sub(
                lambda m, v=v: str(v if m.group(1) == expr["for"] else params[m.group(1)]), expr["each"]
            )
            for v in params[expr["in"]]
        ]
    branch = expr.get("then") if params.get(expr["if"]) else expr.get("else")
    return {"AllOf": []} if branch is None else _render_by_regex(branch, params)


def test_hmac_sha256_is_hmac_digest_for_repeated_and_new_keys() -> None:
    for key in (b"issuer-token", b"", b"k" * 200, os.urandom(44), b"issuer-token"):
        for message in (b"", b"hawk.1.header\n1\nn\nGET\n/\nh\n80\n\n\n", os.urandom(5000)):
            assert macs.hmac_sha256(key, message) == hmac.digest(key, message, "sha256")


def test_hmac_sha256_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macs, "KEY_CACHE_SIZE", 4)
    for i in range(10):
        assert macs.hmac_sha256(b"key%d" % i, b"m") == hmac.digest(b"key%d" % i, b"m", "sha256")
        assert len(macs._keyed) <= 4


def test_random_bytes_are_never_handed_out_twice() -> None:
    taken = [macs.random_bytes(33) for _ in range(3 * macs.RANDOM_BLOCK // 33)]
    assert all(len(b) == 33 for b in taken)
    assert len(set(taken)) == len(taken)
    assert len(macs.random_bytes(macs.RANDOM_BLOCK + 1)) == macs.RANDOM_BLOCK + 1


def test_issued_certificate_seed_is_44_url_safe_characters() -> None:
    seeds = set()
    for _ in range(200):
        creds = tempcreds.issue("issuer", "token", name="n", scopes=["a"], start_ms=0, expiry_ms=1000)
        seed = tempcreds.jsonwire.loads_own(creds["certificate"])["seed"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{44}", seed)
        seeds.add(seed)
    assert len(seeds) == 200


@pytest.mark.parametrize(
    ("template", "params"),
    [
        (
            {
                "AllOf": [
                    {"for": "scope", "in": "scopes", "each": "<scope>"},
                    {"for": "route", "in": "routes", "each": "queue:route:<route>"},
                    "queue:create-task:project:<projectId>",
                    {
                        "AnyOf": [
                            {"for": "p", "in": "ps", "each": "queue:create-task:<p>:<provisionerId>/<w>"}
                        ]
                    },
                ]
            },
            {
                "scopes": ["a:{b}", "c<"],
                "routes": [],
                "projectId": "x}{",
                "ps": ["high", 3],
                "provisionerId": "p",
                "w": True,
            },
        ),
        ({"AnyOf": ["queue:x:<a.b>", "y:<c[0]>", "plain {z}"]}, {"a.b": "1", "c[0]": 2}),
        ({"if": "flag", "then": "t:<taskId>", "else": "e:<taskId>"}, {"flag": False, "taskId": "T"}),
        ({"if": "flag", "then": "t:<taskId>"}, {"flag": False, "taskId": "T"}),
        ("queue:resolve-task:<taskId>/<runId>", {"taskId": "abc", "runId": "0"}),
    ],
)
def test_render_gives_what_the_regex_renderer_gave(template: Any, params: dict[str, Any]) -> None:
    assert render(template, params) == _render_by_regex(template, params)


def test_render_of_a_missing_parameter_raises_key_error() -> None:
    with pytest.raises(KeyError):
        render("queue:x:<missing>", {})
    with pytest.raises(KeyError):
        render({"for": "s", "in": "items", "each": "<s>:<missing>"}, {"items": ["a"]})
