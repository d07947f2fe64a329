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


def test_normalise_matches_the_pairwise_definition_on_generated_sets() -> None:
    """The fast normalise equals "drop s when another held p* has p as a prefix of s"."""
    import random

    def pairwise(scopes: list[str]) -> list[str]:
        unique = sorted(set(scopes))
        if "*" in unique:
            return ["*"]
        stars = [s for s in unique if s.endswith("*")]
        return [s for s in unique if not any(o != s and s.startswith(o[:-1]) for o in stars)]

    rng = random.Random(7)
    for _ in range(5000):
        scopes = [
            "".join(rng.choice("ab*:") for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 8))
        ]
        assert normalise(scopes) == pairwise(scopes), scopes
    # Not transitive and each star may drop the other: the pairwise rule exactly (`**` is refused on input).
    assert normalise(["a*", "a**", "ab"]) == []
    assert normalise(["ab*", "a*", "abc"]) == ["a*"]


def test_expansion_of_new_sets_reuses_the_granting_closure() -> None:
    roles = RoleMap({"anonymous": ["queue:get-task:*", "assume:x"], "x": ["q:y"]})
    first = roles.expand(["assume:anonymous", "queue:reclaim-task:T1/0"])
    second = roles.expand(["assume:anonymous", "queue:reclaim-task:T2/0", "queue:get-task:abc"])
    assert first == ("assume:anonymous", "assume:x", "q:y", "queue:get-task:*", "queue:reclaim-task:T1/0")
    assert second == ("assume:anonymous", "assume:x", "q:y", "queue:get-task:*", "queue:reclaim-task:T2/0")
