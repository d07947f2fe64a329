"""Scope satisfaction with Taskcluster's rules (spec/platform.md §4.7), shared by both programs.

The platform uses it to authorize requests; the worker uses it to check feature scopes
(caches, os groups, docker capabilities) against ``task.scopes``. It is pure: role expansion
(``assume:``) is the auth service's job, reached over HTTP by the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

ScopeExpr: TypeAlias = "str | Mapping[str, Any]"


def scope_satisfied(held: Iterable[str], required: str) -> bool:
    """True when one held scope equals ``required`` or is a trailing-``*`` prefix of it.

    A ``*`` anywhere else, and any ``*`` in the required scope, is an ordinary character.
    """
    for scope in held:
        if scope == required:
            return True
        if scope.endswith("*") and required.startswith(scope[:-1]):
            return True
    return False


def expression_satisfied(held: Sequence[str], expr: ScopeExpr) -> bool:
    """Evaluate ``str | {"AllOf": [...]} | {"AnyOf": [...]}``; empty AllOf holds, empty AnyOf does not."""
    if isinstance(expr, str):
        return scope_satisfied(held, expr)
    if "AllOf" in expr:
        return all(expression_satisfied(held, e) for e in expr["AllOf"])
    if "AnyOf" in expr:
        return any(expression_satisfied(held, e) for e in expr["AnyOf"])
    raise ValueError(f"not a scope expression: {expr!r}")


def missing_scopes(held: Sequence[str], expr: ScopeExpr) -> ScopeExpr | None:
    """The part of ``expr`` that ``held`` does not satisfy (``None`` when satisfied).

    Used to name what is missing in 403 answers and malformed-payload logs.
    """
    if expression_satisfied(held, expr):
        return None
    if isinstance(expr, str):
        return expr
    if "AllOf" in expr:
        parts = [m for e in expr["AllOf"] if (m := missing_scopes(held, e)) is not None]
        return parts[0] if len(parts) == 1 else {"AllOf": parts}
    return expr


def describe(expr: ScopeExpr) -> str:
    """A human-readable rendering of a scope expression, one scope per line where possible."""
    if isinstance(expr, str):
        return expr
    if "AllOf" in expr:
        return "\n".join(describe(e) for e in expr["AllOf"])
    if "AnyOf" in expr:
        return "one of:\n" + "\n".join("  " + describe(e).replace("\n", "\n  ") for e in expr["AnyOf"])
    return repr(expr)
