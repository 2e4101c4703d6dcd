"""The imports among the modules of a package go one way: no cycles, not even hidden ones.

The graph is read from the sources with :mod:`ast`, so an import inside a function (which
a plain ``import`` of the module would never run) counts like one at the top; only imports
under ``if TYPE_CHECKING:`` are left out (they never run). An edge joins two modules of
the same package: ``from pkg import name`` points at ``pkg.name`` where that is a module,
else at ``pkg`` itself (its ``__init__``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

#: The packages whose modules must import each other without a cycle.
PACKAGES = (
    "xentcheck.harness.adapters",
    "xentcheck.harness.strategies",
    "xentcheck.references.fast",
)


def _modules(package: str) -> dict[str, Path]:
    """Module name -> source file, for the package itself and each module in its folder."""
    folder = Path(importlib.import_module(package).__path__[0])
    found = {package: folder / "__init__.py"}
    for path in sorted(folder.glob("*.py")):
        if path.name != "__init__.py":
            found[f"{package}.{path.stem}"] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, tuple[str, ...]]]:
    """Every import statement of ``tree``, wherever it stands, as (module, names):
    ``import a.b`` is ``("a.b", ())``, ``from a import b, c`` is ``("a", ("b", "c"))``,
    relative imports resolved against ``module``."""
    found: list[tuple[str, tuple[str, ...]]] = []
    base = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parent = base
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                source = f"{parent}.{source}" if source else parent
            found.append((source, tuple(alias.name for alias in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for source, names in _imports(tree, name, is_package=name == package):
            submodules = {f"{source}.{n}" for n in names} & modules.keys()
            targets |= submodules
            if source in modules and (not names or len(submodules) < len(names)):
                targets.add(source)  # a name (not a submodule) of that module
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_within(package: str) -> None:
    graph = import_graph(package)
    assert len(graph) > 2, f"{package}: found only {sorted(graph)}"
    cycle = find_cycle(graph)
    assert cycle is None, f"{package}: import cycle {' -> '.join(cycle or [])}"


def test_isolation_does_not_import_registry() -> None:
    """The worker's loading of adapters lives in ``worker``; ``registry`` opens handles
    from ``isolation``: the dependency goes one way."""
    graph = import_graph("xentcheck.harness.adapters")
    isolation = "xentcheck.harness.adapters.isolation"
    registry = "xentcheck.harness.adapters.registry"
    worker = "xentcheck.harness.adapters.worker"
    assert registry not in graph[isolation]
    assert isolation in graph[registry]
    assert {isolation, registry} <= graph[worker]
    assert not any(worker in targets for targets in graph.values())


def test_worker_command_names_the_worker_module() -> None:
    """The command a worker process runs imports ``worker_main`` from where it lives."""
    from xentcheck.harness.adapters import isolation, worker

    assert "xentcheck.harness.adapters.worker import worker_main" in isolation._WORKER_CODE
    assert callable(worker.worker_main)


def test_the_cycle_finder_finds_cycles() -> None:
    """The check itself: a hidden (function-local) import closing a loop is a cycle, one
    under ``if TYPE_CHECKING:`` is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("import x\ndef f():\n    from p import q\nif TYPE_CHECKING:\n    import t\n")
    assert _imports(tree, "p.m", is_package=False) == [("x", ()), ("p", ("q",))]
    relative = ast.parse("from . import sibling\nfrom .other import name\n")
    assert _imports(relative, "p.m", is_package=False) == [
        ("p", ("sibling",)), ("p.other", ("name",))]
