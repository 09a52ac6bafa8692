"""The modules of ``sa3`` import each other without a cycle.

A cycle works only by accident of import order (a name looked up before its module finished
running fails), and hides as a function-level import. The graph is read from the source with
``ast``: every ``from .x import``, ``from . import x``, ``from sa3.x import`` and ``import sa3.x``,
at module level or inside functions, is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SA3 = Path(__file__).resolve().parents[2] / "sa3"


def _target(name: str, modules: set[str]) -> str:
    """The ``sa3`` module a dotted name below the package refers to (``__init__`` for the package's own names)."""
    head = name.split(".")[0]
    return head if head in modules else "__init__"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the names of the package's modules it imports anywhere in its source."""
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in sorted(modules):
        edges: set[str] = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module and node.module.split(".")[0] == package.name:
                    inner = node.module.partition(".")[2]  # "sa3.x.y" -> "x.y"; "sa3" -> ""
                    edges.update([_target(inner, modules)] if inner else
                                 (_target(a.name, modules) for a in node.names))
                elif node.level == 1 and node.module:
                    edges.add(_target(node.module, modules))
                elif node.level == 1:  # from . import x, y
                    edges.update(_target(a.name, modules) for a in node.names)
            elif isinstance(node, ast.Import):
                edges.update(_target(a.name.partition(".")[2], modules) for a in node.names
                             if a.name.startswith(f"{package.name}."))
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_sa3_has_no_import_cycle():
    graph = import_graph(SA3)
    assert {"audio", "checks", "config", "same", "layers", "cpu_gemm"} <= set(graph)
    assert "checks" in graph["audio"] and "cpu_gemm" in graph["layers"]  # edges are read
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in sa3: {' -> '.join(cycle)}"


@pytest.mark.parametrize("source, cycle", [
    ({"a": "from .b import f\n", "b": "def g():\n    from .a import h\n"}, ["a", "b", "a"]),
    ({"a": "from . import b\n", "b": "import sa3.c\n", "c": "from sa3.a import x\n"}, ["a", "b", "c", "a"]),
    ({"a": "from .b import f\n", "b": "from .c import g\n", "c": "x = 1\n"}, None),
])
def test_the_cycle_finder_sees_function_level_and_absolute_imports(tmp_path, source, cycle):
    package = tmp_path / "sa3"
    package.mkdir()
    for name, text in source.items():
        (package / f"{name}.py").write_text(text)
    assert find_cycle(import_graph(package)) == cycle
