"""The test suite's own rules, checked from its source so that breaking one fails the suite.

Missing infrastructure (root, dockerd, a host tool) must skip locally but fail under ``CI=true``:
that only holds if every such skip goes through ``helpers.ci.skip_or_fail``, so no other file may
call ``pytest.skip`` or mark tests ``skip`` / ``skipif``. Shared helpers come from ``tests/helpers/``
(``pythonpath`` in pyproject.toml), so no test edits ``sys.path``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ci
from helpers.ci import skip_or_fail

TESTS = Path(__file__).resolve().parents[1]
RULE_HOME = TESTS / "helpers" / "ci.py"
THIS = Path(__file__).resolve()
SKIP = re.compile(r"pytest\.skip\(|pytest\.importorskip\(|mark\.skip(if)?\b")
SYS_PATH = re.compile(r"sys\.path\s*(\[|=|\.insert|\.append|\.extend)")


def _sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.resolve() not in (RULE_HOME, THIS))


def _hits(pattern: re.Pattern[str]) -> list[str]:
    return [
        f"{path.relative_to(TESTS)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]


def test_every_skip_goes_through_skip_or_fail() -> None:
    assert _hits(SKIP) == [], "skip with helpers.ci.skip_or_fail (it fails under CI=true) instead"


def test_no_test_edits_sys_path() -> None:
    assert _hits(SYS_PATH) == [], "import shared code from tests/helpers/ instead of editing sys.path"


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE"])
def test_skip_or_fail_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="no dockerd.*CI=true"):
        skip_or_fail("no dockerd")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_skip_or_fail_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="no dockerd"):
        skip_or_fail("no dockerd")


def test_require_tool_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install no-such-package"):
        ci.require_tool("no-such-tool-tcw", "no-such-package")
    assert ci.require_tool("sh", "dash")
