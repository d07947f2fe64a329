"""Official request schemas, compiled once, with Taskcluster's "fill in defaults, then validate".

The schemas are the self-contained draft-06 copies shipped in ``tcworker/schemas/queue/``
(MPL-2.0, unmodified). Upstream validates with ajv ``useDefaults``; :func:`fill_defaults` does
the same for object properties before validation, so handlers always see every default.

Speed: each schema is compiled twice, once with ``fastjsonschema`` (generated Python code,
~20x faster: it decides "valid" on the hot path) and once with ``jsonschema`` (which only runs
when the fast check fails, to list every error in the 400 answer). Both get the same format
checkers, so they agree on what is valid.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema

from tcworker import jsonformats
from tcworker.platform.errors import InputValidationError

format_checker = jsonformats.format_checker


def load_schema(relative: str) -> dict[str, Any]:
    """``relative`` like ``queue/create-task-request.json`` under ``tcworker/schemas/queue``."""
    path = importlib.resources.files("tcworker") / "schemas" / "queue" / relative
    return dict(json.loads(path.read_text(encoding="utf-8")))


DefaultPlan = tuple[tuple[str, bool, Any, "DefaultPlan"], ...]


def default_plan(schema: dict[str, Any]) -> DefaultPlan:
    """Which object properties have defaults, at any depth: (key, has default, default, sub-plan).

    Computed once per schema so that filling defaults only walks the branches that need it
    (a task payload is never traversed).
    """
    plan = []
    for key, sub in schema.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        nested = default_plan(sub)
        if "default" in sub or nested:
            plan.append((key, "default" in sub, sub.get("default"), nested))
    return tuple(plan)


def fill_defaults(plan: DefaultPlan, instance: Any) -> None:
    """Insert ``default`` values of missing object properties along ``plan`` (ajv useDefaults)."""
    if not isinstance(instance, dict):
        return
    for key, has_default, default, nested in plan:
        if key not in instance:
            if not has_default:
                continue
            # Strings, numbers and empty containers (nearly every default) without deepcopy's
            # machinery; each request still gets its own container.
            if isinstance(default, (str, int, float, bool)) or default is None:
                instance[key] = default
            elif default == [] or default == {}:
                instance[key] = type(default)()
            else:
                instance[key] = copy.deepcopy(default)
        if nested:
            fill_defaults(nested, instance[key])


class SchemaSet:
    """Compiled validators keyed by schema path; ``patch`` adjusts a schema before compiling."""

    def __init__(self) -> None:
        self._checker = format_checker()
        self._validators: dict[str, tuple[dict[str, Any], jsonschema.protocols.Validator]] = {}
        self._plans: dict[str, DefaultPlan] = {}
        self._fast: dict[str, Callable[[Any], Any]] = {}

    def add(self, relative: str, patch: Callable[[dict[str, Any]], None] | None = None) -> None:
        schema = load_schema(relative)
        if patch is not None:
            patch(schema)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft6Validator)
        self._validators[relative] = (schema, cls(schema, format_checker=self._checker))
        self._plans[relative] = default_plan(schema)
        self._fast[relative] = fastjsonschema.compile(
            schema,
            formats={"date-time": jsonformats.is_datetime, "uri": jsonformats.is_uri},
            use_default=False,
        )

    def has(self, relative: str) -> bool:
        return relative in self._validators

    def validate(self, relative: str, instance: Any) -> Any:
        """Fill defaults into ``instance`` and validate it; raise 400 InputValidationError."""
        if relative not in self._validators:
            self.add(relative)
        schema, validator = self._validators[relative]
        fill_defaults(self._plans[relative], instance)
        try:
            self._fast[relative](instance)
            return instance
        except Exception:  # invalid, or a case the generated code cannot judge: ask jsonschema
            pass
        errors = list(validator.iter_errors(instance))
        if errors:
            lines = []
            for err in errors[:10]:
                where = "/".join(str(p) for p in err.absolute_path)
                text = err.message if len(err.message) < 500 else err.message[:500] + "..."
                lines.append(f"  * data{'/' + where if where else ''}: {text}")
            schema_id = schema.get("$id", relative)
            raise InputValidationError(
                f"Schema Validation Failed!\nRejecting Schema: {schema_id}\nErrors:\n" + "\n".join(lines)
            )
        return instance
