"""No import cycle in the package: each module can be read, and loaded, before whatever uses it.

The imports are read from the source (ast), not executed, so the test takes well under a
second. Every `import` statement counts, wherever it stands: one inside a function is a cycle
all the same, only deferred to the first call, where it fails as a half-initialised module.
An edge goes to the module named (`from taxi_assets.pkg import name` to `taxi_assets.pkg.name`
when that is a module, else to `taxi_assets.pkg`). The parent packages Python runs first are
not edges: a package's `__init__` importing its own submodules is how packages work.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import taxi_assets

PACKAGE_ROOT = Path(taxi_assets.__file__).parent
PACKAGE = "taxi_assets"


def module_files(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Each module of the package by dotted name, packages by their own name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, at any level of its code."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import taxi_assets.a.b` names a module; a dotted name past a module is not one.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a path that
    returns to its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, within the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not strongly connected")  # cannot happen


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles in taxi_assets:\n" + "\n".join(
        " -> ".join(cycle) for cycle in found
    )


def test_the_walk_sees_the_package_modules_and_their_imports():
    graph = import_graph()
    assert {"taxi_assets.definitions", "taxi_assets.defs.io_managers.duckdb"} <= set(graph)
    assert "taxi_assets.datasets" in graph["taxi_assets.defs.trips"]


PRIVATE_API_FENCE = f"{PACKAGE}.dagster_private"


def private_dagster_imports(path: Path) -> set[str]:
    """The `dagster._…` modules a file imports, at any level of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return {name for name in found if name.startswith("dagster._")}


def test_dagsters_private_api_is_imported_only_inside_its_fence():
    outside = {
        name: imported
        for name, path in module_files().items()
        if not (name == PRIVATE_API_FENCE or name.startswith(f"{PRIVATE_API_FENCE}."))
        and (imported := private_dagster_imports(path))
    }
    inside = set().union(
        *(
            private_dagster_imports(path)
            for path in (PACKAGE_ROOT / "dagster_private").rglob("*.py")
        )
    )
    assert inside, "the walk finds no private import even inside the fence"
    assert not outside, f"Dagster's private API outside {PRIVATE_API_FENCE}: {outside}"


# What is not Dagster's business (the TLC's files, where data lands) is usable without it.
NO_DAGSTER = ("taxi_assets.tlc", "taxi_assets.storage")


@pytest.mark.parametrize("package", NO_DAGSTER)
def test_the_packages_outside_dagster_load_without_it(package):
    modules = [name for name in module_files() if name.startswith(f"{package}.")]
    assert len(modules) > 1
    # A fresh interpreter: this one has Dagster loaded already.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]", f"{package} loads Dagster: {loaded.stdout}"


@pytest.fixture
def package_with_a_cycle(tmp_path: Path) -> Path:
    """A package whose cycle closes only through an import inside a function."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "top.py").write_text("from pkg.sub import leaf\n")
    (root / "sub" / "leaf.py").write_text("def later():\n    from ..top import thing\n")
    (root / "alone.py").write_text("import pkg.top\n")
    return root


def test_a_cycle_through_a_function_level_import_is_found_and_named(package_with_a_cycle):
    graph = import_graph(package_with_a_cycle, "pkg")
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    assert cycles(graph) == [["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]]
