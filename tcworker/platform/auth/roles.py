"""Role expansion (``assume:<roleId>``) and scope-set normalisation, spec §4.7.

Roles are a static map loaded at start-up (the ``anonymous`` role and any from ``--clients``).
A role id ending in ``*`` applies to every ``assume:`` scope it prefixes, and ``<..>`` in its
scopes is replaced by the part the ``*`` matched. Expansion results are cached per input set
because the role map never changes while the server runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tcworker.scopes import scope_satisfied

_CACHE_LIMIT = 4096


def normalise(scopes: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated, without scopes already implied by a trailing-``*`` scope.

    A scope ``s`` is implied when some other held ``p*`` has ``p`` as a prefix of ``s``. Checking
    every scope against every star in Python is quadratic and ran on each request made with
    temporary credentials (their scope sets are new every time); ``str.startswith`` with a tuple
    does the same search in C. For a star ``s`` its own prefix ``s[:-1]`` must not count: another
    star's prefix is then either ``s`` itself or a prefix of ``s[:-2]``.
    """
    unique = set(scopes)
    if "*" in unique:
        return ["*"]
    prefixes = {s[:-1] for s in unique if s.endswith("*")}
    ordered = sorted(unique)
    if not prefixes:
        return ordered
    starts = tuple(prefixes)
    return [
        s
        for s in ordered
        if not ((s in prefixes or s[:-2].startswith(starts)) if s.endswith("*") else s.startswith(starts))
    ]


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
        self._closures: dict[frozenset[str], frozenset[str]] = {}

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

    @staticmethod
    def _can_grant(scope: str) -> bool:
        """Only ``assume:...`` scopes, and stars that cover some ``assume:...``, can pull in roles."""
        return scope.startswith("assume:") or (scope.endswith("*") and "assume:".startswith(scope[:-1]))

    def expand(self, scopes: Iterable[str]) -> tuple[str, ...]:
        key = frozenset(scopes)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        # Expansion only follows the scopes that can grant; the rest pass through unchanged. Their
        # closure is cached on its own, because temporary credentials bring a new set every time
        # (task ids in it) while the scopes that grant are nearly always just `assume:anonymous`.
        granting = frozenset(s for s in key if self._can_grant(s))
        closure = self._closures.get(granting)
        if closure is None:
            closure = self._closure(granting)
            self._remember(self._closures, granting, closure)
        result = tuple(normalise(key | closure))
        self._remember(self._cache, key, result)
        return result

    def _closure(self, granting: frozenset[str]) -> frozenset[str]:
        seen: set[str] = set(granting)
        todo = list(granting)
        if "*" not in seen:
            while todo:
                scope = todo.pop()
                for new in self._granted_by(scope):
                    if new not in seen:
                        seen.add(new)
                        if new.startswith("assume:") or new.endswith("*"):
                            todo.append(new)
        return frozenset(seen)

    @staticmethod
    def _remember(cache: dict[frozenset[str], Any], key: frozenset[str], value: Any) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
