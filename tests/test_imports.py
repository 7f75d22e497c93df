"""The library's shape: its modules import each other without a cycle (counting imports inside functions too,
which can hide one), and never the tooling beside it (``benchmarks``)."""

from __future__ import annotations

import ast
from pathlib import Path

import roberta_diffusion

LIB = Path(roberta_diffusion.__file__).parent
MODULES = {p.stem: p for p in LIB.glob("*.py")}


def imported(path: Path) -> tuple[set[str], set[str]]:
    """``(library modules, other top-level packages)`` that ``path`` imports anywhere in its body."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y | from . import x, y
            ours |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "roberta_diffusion":
                ours |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            else:
                others.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                (ours.add(parts[1]) if parts[0] == "roberta_diffusion" and len(parts) > 1 else others.add(parts[0]))
    return ours & set(MODULES), others


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other in a circle, or None (depth-first search, three colours)."""
    state, path = dict.fromkeys(graph, "new"), []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state[dep] == "open":
                return path[path.index(dep):] + [dep]
            if state[dep] == "new" and (found := visit(dep)):
                return found
        state[module] = "done"
        path.pop()
        return None

    return next((c for m in sorted(graph) if state[m] == "new" and (c := visit(m))), None)


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_library_has_no_import_cycle():
    graph = {name: imported(path)[0] - {name} for name, path in MODULES.items()}
    assert {"sampler", "collator", "plan"} <= set(graph)  # the walk sees the library
    assert "canvas" in graph["sampler"]  # ... and its imports
    assert find_cycle(graph) is None


def test_the_library_does_not_import_the_benchmarks():
    users = [name for name, path in MODULES.items() if "benchmarks" in imported(path)[1]]
    assert users == []


# Imported where they are used, not at the top: packages the library works without (the dev extra's notebook
# tooling, pandas) and `datasets`, which only hub corpora need and which costs every command a second to import.
LAZY = {"pandas", "papermill", "jupytext", "nbformat", "jupyter_client", "datasets"}


def test_imports_are_at_the_top_unless_optional():
    inside = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [node.module or "."] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                inside += [f"{name}:{node.lineno} {n}" for n in names if n.split(".")[0] not in LAZY]
    assert inside == []
