"""JSON-schema ``format`` checks both programs share, with no optional jsonschema extras.

jsonschema checks ``date-time`` only when the optional ``rfc3339-validator`` package is present
(``jsonschema[format]``); without it ``FormatChecker(formats=("date-time",))`` raises
``KeyError``. Taskcluster's own validation (ajv) accepts RFC 3339 and requires a scheme in
``uri``, so the checks here follow ``tcworker.tctime.parse`` and that rule, on every machine.
"""

from __future__ import annotations

import re

import jsonschema

from tcworker import tctime

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")


def is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value and "t" not in value:
        return False
    try:
        tctime.parse(value)
    except (ValueError, OverflowError):
        return False
    return True


def is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.fullmatch(value))


def format_checker() -> jsonschema.FormatChecker:
    """A checker for exactly ``date-time`` and ``uri``; other formats are not asserted."""
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(is_datetime)
    checker.checks("uri")(is_uri)
    return checker
