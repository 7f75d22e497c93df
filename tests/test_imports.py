"""The shape of the two packages: the library (``roberta_diffusion``) and the workbench around it
(``workbench``: command line, pipeline, notebook cells) each import their own modules without a cycle (counting
imports inside functions too, which can hide one); the library never imports the workbench nor the tooling
beside it (``benchmarks``)."""

from __future__ import annotations

import ast
from pathlib import Path

import roberta_diffusion
import workbench

LIB = Path(roberta_diffusion.__file__).parent
MODULES = {p.stem: p for p in LIB.glob("*.py")}
WORKBENCH = {p.stem: p for p in Path(workbench.__file__).parent.glob("*.py")}


def imported(path: Path, package: str = "roberta_diffusion") -> tuple[set[str], set[str]]:
    """``(modules of package, other top-level packages)`` that ``path``, a module of ``package``, imports anywhere
    in its body."""
    own = set(MODULES if package == "roberta_diffusion" else WORKBENCH)
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y | from . import x, y
            ours |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == package:
                ours |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            else:
                others.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                (ours.add(parts[1]) if parts[0] == package and len(parts) > 1 else others.add(parts[0]))
    return ours & own, others


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


def test_the_workbench_has_no_import_cycle():
    graph = {name: imported(path, "workbench")[0] - {name} for name, path in WORKBENCH.items()}
    assert {"cli", "commands", "pipeline", "runs", "checks", "panel", "cells"} <= set(graph)  # the walk sees it
    assert {"checks", "commands"} <= graph["cli"] and "runs" in graph["pipeline"]  # ... and its own imports
    assert "roberta_diffusion" in imported(WORKBENCH["cli"], "workbench")[1]  # the library counts as another package
    assert find_cycle(graph) is None


def test_the_library_does_not_import_the_workbench_or_the_benchmarks():
    assert set(MODULES) & (set(WORKBENCH) - {"__init__"}) == set()  # no module in both packages
    for tooling in ("workbench", "benchmarks"):
        users = [name for name, path in MODULES.items() if tooling in imported(path)[1]]
        assert users == [], f"library modules importing {tooling}: {users}"


# Imported where they are used, not at the top: packages both packages work without (the dev extra's notebook
# tooling, pandas) and `datasets`, which only hub corpora need and which costs every command a second to import.
LAZY = {"pandas", "papermill", "jupytext", "nbformat", "jupyter_client", "datasets"}


def test_imports_are_at_the_top_unless_optional():
    inside = []
    modules = {**{f"roberta_diffusion.{n}": p for n, p in MODULES.items()},
               **{f"workbench.{n}": p for n, p in WORKBENCH.items()}}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [node.module or "."] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                inside += [f"{name}:{node.lineno} {n}" for n in names if n.split(".")[0] not in LAZY]
    assert inside == []
