"""The layering rule of issue 8, checked from the source: plug-ins never import upward.

Nothing in ``tcworker/engines/`` or ``tcworker/features/`` may import ``tcworker.worker``,
``tcworker.local`` or ``tcworker.cli``; nothing in ``tcworker/worker/`` may import an engine's
internals (only the registry ``tcworker.engines`` and the contract ``tcworker.engines.base``).
Imports are read with ``ast`` (also those inside functions and ``TYPE_CHECKING`` blocks), so a
violation anywhere in a module fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tcworker"
UPWARD = ("tcworker.worker", "tcworker.local", "tcworker.cli")
ENGINE_SURFACE = ("tcworker.engines", "tcworker.engines.base")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``path``; ``from X import y`` yields X and X.y."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(package: Path, folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((package / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(package.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("folder", ["engines", "features"])
def test_plugins_never_import_the_worker_local_or_cli(folder: str) -> None:
    assert violations(PACKAGE, folder, UPWARD) == []


def test_the_worker_core_knows_only_the_engine_contract_and_registry() -> None:
    found = []
    for path in sorted((PACKAGE / "worker").rglob("*.py")):
        for line, module in imported_modules(path):
            if module.startswith("tcworker.engines") and module not in ENGINE_SURFACE:
                if not any(module == f"{s}.{name}" for s in ENGINE_SURFACE for name in _public_names()):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert found == []


def _public_names() -> set[str]:
    """Names defined by the registry and the contract (``from tcworker.engines.base import X``)."""
    names: set[str] = set()
    for module in ("__init__.py", "base.py"):
        tree = ast.parse((PACKAGE / "engines" / module).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.ImportFrom):
                names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_the_rule_fails_when_a_feature_imports_the_worker(tmp_path: Path) -> None:
    """The check can fail: a copy of the features folder plus one module importing upward."""
    package = tmp_path / "tcworker"
    features = package / "features"
    features.mkdir(parents=True)
    for source in (PACKAGE / "features").glob("*.py"):
        (features / source.name).write_text(source.read_text())
    assert violations(package, "features", UPWARD) == []
    (features / "bad_feature.py").write_text(
        "def f():\n    from tcworker.worker.taskrun import TaskRun\n    import tcworker.cli\n"
    )
    assert violations(package, "features", UPWARD) == [
        "tcworker/features/bad_feature.py:2 imports tcworker.worker.taskrun",
        "tcworker/features/bad_feature.py:2 imports tcworker.worker.taskrun.TaskRun",
        "tcworker/features/bad_feature.py:3 imports tcworker.cli",
    ]
