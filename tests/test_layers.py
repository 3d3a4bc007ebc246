"""The engine's layers as a contract: a package imports only from the packages above it (the order
of ``LAYERS``, which ``nbody_engine/__init__.py`` and docs/DESIGN describe), and no module imports
itself back through others. Every import counts, also those inside functions: a lazy import
defers the cost, not the dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "nbody_engine"
LAYERS = ("config", "events", "physics", "integrators", "learning", "runs", "reporting", "jobs",
          ("evaluate", "sweep"), "runner")


def rank_of(module: str) -> int:
    """The layer of ``nbody_engine.<package>...``; the package ``nbody_engine`` itself is rank -1."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    for rank, layer in enumerate(LAYERS):
        if parts[1] in (layer if isinstance(layer, tuple) else (layer,)):
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and to DESIGN's picture)")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """The engine modules ``path`` imports, absolute."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *filter(None, [base])])
            if base.split(".")[0] != root.name:
                continue
            for alias in node.names:  # ``from . import drawing`` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate, root) else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == root.name}
    return found


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists()


def graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in root.rglob("*.py")}


def upward_imports(root: Path) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph(root).items() for t in targets
                  if rank_of(t) > rank_of(m))


def cycles(root: Path) -> list[list[str]]:
    """Each import circle once, as the modules along it (Tarjan's strongly connected components)."""
    g = graph(root)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_from_a_layer_below_it():
    assert upward_imports(ENGINE) == []


def test_no_import_circle():
    # a package's __init__ that imports its own modules is not a circle worth naming
    real = [c for c in cycles(ENGINE) if not any(m.count(".") == 1 and _is_package(m) for m in c)]
    assert real == []


def _is_package(name: str) -> bool:
    return (ENGINE / Path(*name.split(".")[1:]) / "__init__.py").exists()


def test_every_engine_module_is_short():
    long = {str(p.relative_to(ENGINE)): n for p in ENGINE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check above can fail: physics importing the learning layer is reported."""
    root = tmp_path / "nbody_engine"
    for package in ("physics", "learning"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "learning" / "features.py").write_text("X = 1\n")
    (root / "physics" / "gravity.py").write_text("def f():\n    from ..learning.features import X\n    return X\n")
    assert upward_imports(root) == ["nbody_engine.physics.gravity imports nbody_engine.learning.features"]


@pytest.mark.parametrize("pair", [("a", "b")])
def test_the_contract_catches_a_circle(tmp_path, pair):
    root = tmp_path / "nbody_engine"
    (root / "config").mkdir(parents=True)
    for name in ("__init__", "config/__init__"):
        (root / f"{name}.py").write_text("")
    a, b = pair
    (root / "config" / f"{a}.py").write_text(f"from .{b} import Y\nX = 1\n")
    (root / "config" / f"{b}.py").write_text(f"from .{a} import X\nY = 1\n")
    assert cycles(root) == [["nbody_engine.config.a", "nbody_engine.config.b"]]
