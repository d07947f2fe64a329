"""Role expansion (``assume:<roleId>``) and scope-set normalisation, spec §4.7.

Roles are a static map loaded at start-up (the ``anonymous`` role and any from ``--clients``).
A role id ending in ``*`` applies to every ``assume:`` scope it prefixes, and ``<..>`` in its
scopes is replaced by the part the ``*`` matched. Expansion results are cached per input set
because the role map never changes while the server runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tcworker.scopes import scope_satisfied

_CACHE_LIMIT = 4096


def normalise(scopes: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated, without scopes already implied by a trailing-``*`` scope."""
    unique = sorted(set(scopes))
    if "*" in unique:
        return ["*"]
    stars = [s for s in unique if s.endswith("*")]
    return [s for s in unique if not any(o != s and s.startswith(o[:-1]) for o in stars)]


def _substitute(scope: str, param: str) -> str:
    """Replace ``<..>``; a parameter ending in ``*`` swallows whatever followed the placeholder."""
    index = scope.find("<..>")
    if index < 0:
        return scope
    if param.endswith("*"):
        return scope[:index] + param
    return scope.replace("<..>", param)


class RoleMap:
    """Static roles; `expand(scopes)` returns the closure of `scopes` under `assume:`."""

    def __init__(self, roles: Mapping[str, Sequence[str]]) -> None:
        self._exact = {rid: list(s) for rid, s in roles.items() if not rid.endswith("*")}
        self._prefixed = {rid[:-1]: list(s) for rid, s in roles.items() if rid.endswith("*")}
        self._cache: dict[frozenset[str], tuple[str, ...]] = {}

    def role_ids(self) -> list[str]:
        return sorted([*self._exact, *(p + "*" for p in self._prefixed)])

    def _granted_by(self, scope: str) -> list[str]:
        """Scopes the roles give to one held scope (one step, not recursive)."""
        if scope == "*":
            return []
        granted: list[str] = []
        for role_id, role_scopes in self._exact.items():
            if scope_satisfied([scope], "assume:" + role_id):
                granted.extend(role_scopes)
        if not scope.startswith("assume:") and not "assume:".startswith(scope[:-1]):
            return granted
        for prefix, role_scopes in self._prefixed.items():
            full = "assume:" + prefix
            if scope.startswith(full):
                param = scope[len(full) :]
                granted.extend(_substitute(s, param) for s in role_scopes)
            elif scope.endswith("*") and full.startswith(scope[:-1]):
                granted.extend(_substitute(s, "*") for s in role_scopes)
        return granted

    def expand(self, scopes: Iterable[str]) -> tuple[str, ...]:
        key = frozenset(scopes)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        seen: set[str] = set(key)
        todo = [
            s for s in key if s.startswith("assume:") or (s.endswith("*") and "assume:".startswith(s[:-1]))
        ]
        if "*" not in seen:
            while todo:
                scope = todo.pop()
                for new in self._granted_by(scope):
                    if new not in seen:
                        seen.add(new)
                        if new.startswith("assume:") or new.endswith("*"):
                            todo.append(new)
        result = tuple(normalise(seen))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result
