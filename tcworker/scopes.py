"""Scope satisfaction with Taskcluster's rules (spec/platform.md §4.7), shared by both programs.

The platform uses it to authorize requests; the worker uses it to check feature scopes
(caches, os groups, docker capabilities) against ``task.scopes``. It is pure: role expansion
(``assume:``) is the auth service's job, reached over HTTP by the worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from tcworker.errors import MalformedPayload, ResourceUnavailable, TaskError

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


def could_assume(scope: str) -> bool:
    """True when ``scope`` grants some ``assume:`` scope, so role expansion could add scopes."""
    return scope.startswith("assume:") or (scope.endswith("*") and "assume:".startswith(scope[:-1]))


def unsatisfied(held: Sequence[str], required: Sequence[ScopeExpr]) -> list[ScopeExpr]:
    """The parts of each required expression ``held`` does not satisfy."""
    return [m for expr in required if (m := missing_scopes(held, expr)) is not None]


def missing_message(missing: Sequence[ScopeExpr], held: Sequence[str]) -> str:
    """The task-log text for a scope failure: what is missing, then what the task has."""
    lines = ["The task's scopes do not allow what its payload asks for.", "Missing scopes:"]
    lines += ["  " + describe(m).replace("\n", "\n  ") for m in missing]
    lines.append("task.scopes:" if held else "task.scopes is empty.")
    lines += [f"  {s}" for s in held]
    return "\n".join(lines)


async def check_task_scopes(
    held: Sequence[str],
    required: Sequence[ScopeExpr],
    expand: Callable[[list[str]], Awaitable[list[str]]] | None,
) -> None:
    """The one scope check of a run: raise ``MalformedPayload`` unless ``held`` satisfy ``required``.

    The direct check comes first (no network). Only when it fails and one of the held scopes could
    assume a role are they expanded through ``expand`` (auth ``expandScopes``), as generic-worker
    does; an expansion failure is ``ResourceUnavailable`` (nobody's fault, retry later).
    """
    held = [str(s) for s in held]
    missing = unsatisfied(held, required)
    if not missing:
        return
    if expand is not None and any(could_assume(s) for s in held):
        try:
            expanded = list(await expand(held))
        except TaskError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ResourceUnavailable(
                f"could not expand the task's scopes through the auth service: {type(exc).__name__}: {first}"
            ) from exc
        missing = unsatisfied(expanded, required)
        if not missing:
            return
    raise MalformedPayload(missing_message(missing, held))
