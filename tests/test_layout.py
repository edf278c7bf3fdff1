"""The package's shape: stages look back, never forward, and nothing imports in a cycle.

Every ``import`` and ``from ... import`` in ``prostate_fast/`` is read with :mod:`ast` (including
the lazy ones inside functions; only ``if TYPE_CHECKING:`` blocks are exempt, since they never run).
Each module belongs to a layer: the shared owners first, then the stages in pipeline order. A module
may import its own stage, the shared owners and earlier stages, never a later stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "prostate_fast"

#: Pipeline order. A top-level name not listed here fails the test, so a new module must be placed.
LAYERS: list[tuple[str, ...]] = [
    (
        "__init__",
        "errors",
        "_util",
        "_outputs",
        "_native",
        "_mx",
        "_plot",
        "metrics",
    ),  # shared owners
    ("slide",),
    ("tissue", "_tissue_cy"),
    ("stain",),
    ("tile",),
    ("label",),
    ("dataset",),
    ("model",),
    ("train",),
    ("predict",),
    ("overlay",),
    ("geojson",),
    ("evaluate", "grading"),
    ("triage",),
    ("screen",),
    ("batch",),
    ("view",),
    ("synthetic",),
    ("demo",),
    ("cli", "distributed"),
    ("baseline",),  # the study's plain algorithms: references for tests and benchmarks only
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Absolute ``prostate_fast.*`` modules imported anywhere in ``path`` (TYPE_CHECKING aside)."""
    name = _module_name(path)
    found = _imported_names(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    found.discard(name)
    return {m for m in found if _exists(m)}


def _imported_names(source: str, name: str, is_package: bool) -> set[str]:
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "prostate_fast")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "prostate_fast":
                found.add(mod)
                # `from . import x` / `from .pkg import sub` may name submodules
                found.update(f"{mod}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    base = PKG / rel
    return (
        base.with_suffix(".py").is_file()
        or (base / "__init__.py").is_file()
        or any(base.parent.glob(f"{base.name}.*.so"))
        or base.with_suffix(".pyx").is_file()
    )


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({_stage(m) for m in _graph()} - RANK.keys())
    assert not unplaced, f"place these top-level modules in LAYERS: {unplaced}"


def test_stages_import_only_earlier_stages() -> None:
    upward = []
    for module, deps in _graph().items():
        here = RANK.get(_stage(module))
        for dep in deps:
            there = RANK.get(_stage(dep))
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports of a later stage:\n" + "\n".join(sorted(upward))


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ is imported with any of its submodules; count that edge too.
    for module in list(graph):
        parent = module.rpartition(".")[0]
        if parent and parent in graph:
            graph[module] = graph[module] | {parent}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep.rpartition(".")[0] == node:  # a package importing its own submodule
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            dfs(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("limit", [600])
def test_no_module_over_the_size_limit(limit: int) -> None:
    big = {
        str(p.relative_to(PKG)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit
    }
    assert not big, f"modules over {limit} lines: {big}"


def test_the_walker_sees_lazy_and_relative_imports() -> None:
    """Lazy imports inside functions count; TYPE_CHECKING blocks do not; relative ones resolve."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from prostate_fast.cli import main\n"
        "def f():\n    from ..batch import run_batch\n"
        "from . import pyramid\n"
    )
    names = _imported_names(source, "prostate_fast.slide.core", is_package=False)
    assert "prostate_fast.batch" in names
    assert "prostate_fast.slide.pyramid" in names
    assert not any(n.startswith("prostate_fast.cli") for n in names)


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    """A later stage imported by an earlier one is what the direction test exists to catch."""
    names = _imported_names("def f():\n    from .screen import x\n", "prostate_fast.tile", False)
    assert names == {"prostate_fast.screen", "prostate_fast.screen.x"}
    assert RANK[_stage("prostate_fast.screen")] > RANK[_stage("prostate_fast.tile")]
