"""Role expansion and scope normalisation of the local auth service (spec §4.7)."""

from __future__ import annotations

from tcworker.platform.auth.roles import RoleMap, normalise
from tcworker.platform.auth.service import DEFAULT_ANONYMOUS_SCOPES, AuthService, Client


def test_normalise_drops_scopes_implied_by_a_star() -> None:
    assert normalise(["queue:a", "queue:*", "index:x", "index:x"]) == ["index:x", "queue:*"]
    assert normalise(["a", "*"]) == ["*"]


def test_assume_expands_recursively() -> None:
    roles = RoleMap({"a": ["assume:b", "x:1"], "b": ["y:2"]})
    assert set(roles.expand(["assume:a"])) == {"assume:a", "assume:b", "x:1", "y:2"}


def test_star_role_substitutes_the_matched_part() -> None:
    roles = RoleMap({"hook-id:proj/*": ["secrets:get:<..>/config", "queue:route:index.<..>.*"]})
    got = set(roles.expand(["assume:hook-id:proj/nightly"]))
    assert "secrets:get:nightly/config" in got
    assert "queue:route:index.nightly.*" in got


def test_held_star_assume_gains_every_matching_role() -> None:
    roles = RoleMap({"project:a": ["p:a"], "project:b": ["p:b"], "other": ["o"]})
    got = set(roles.expand(["assume:project:*"]))
    assert {"p:a", "p:b"} <= got and "o" not in got


def test_parameter_ending_in_star_swallows_the_rest_of_the_scope() -> None:
    roles = RoleMap({"repo:*": ["queue:create-task:<..>:suffix"]})
    assert "queue:create-task:x*" in roles.expand(["assume:repo:x*"])


def test_anonymous_role_defaults_and_override() -> None:
    auth = AuthService([Client("c", "t", ())], {})
    assert set(DEFAULT_ANONYMOUS_SCOPES) <= set(auth.anonymous.scopes)
    restricted = AuthService([Client("c", "t", ())], {"anonymous": ["queue:ping"]})
    assert "queue:get-task:*" not in restricted.anonymous.scopes
    assert "queue:ping" in restricted.anonymous.scopes
