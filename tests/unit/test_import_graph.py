"""The package layering, read from the source: every import of ``plugins/lifecycle``, at module
level or inside a function, is an edge between two top-level packages (``model``, ``config``,
``engine``...; a top-level module such as ``paths`` is its own package).

- No cycle between packages.
- Every edge points down the layers ``paths`` ← ``model`` ← ``config`` ← ``messages`` ←
  ``channels`` ← ``engine`` ← ``reporting`` ← ``airflow``/``web`` ← ``devtools``.
- Nothing outside ``devtools`` imports ``devtools``: the runtime never loads developer tooling.
- ``sandbox`` (the provider stand-in) imports nothing of the rest but ``paths``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

from lifecycle.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT / "plugins"
PACKAGE = "lifecycle"
LAYERS = {
    "paths": 0,
    "model": 1,
    "config": 2,
    "migrations": 2,
    "messages": 3,
    "channels": 4,
    "engine": 5,
    "reporting": 6,
    "airflow": 7,
    "web": 7,
    "devtools": 8,
}
STANDALONE = {"sandbox": {"paths"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {_module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that ``name`` imports anywhere in its body (relative imports resolved;
    ``from lifecycle import config`` names the module ``lifecycle.config``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def top_level(module: str) -> str:
    """``lifecycle.engine.dispatch`` -> ``engine``; the package itself -> ``paths`` (its version only)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "paths"


def package_edges() -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> the module imports that make the edge."""
    found = modules()
    known = set(found)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, path in found.items():
        for target in imports(name, path, known):
            if target != PACKAGE and not target.startswith(f"{PACKAGE}."):
                continue
            source, imported = top_level(name), top_level(target)
            if source != imported:
                edges[(source, imported)].add(f"{name} -> {target}")
    return edges


def cycles(edges: dict[tuple[str, str], set[str]]) -> list[list[str]]:
    """Every elementary cycle's packages, found by a depth-first search from each package."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    found: list[list[str]] = []

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:
                visit(start, nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, start, [start])
    return found


def _evidence(edges: dict[tuple[str, str], set[str]], pairs: list[tuple[str, str]]) -> str:
    return "; ".join(f"{a} -> {b} ({', '.join(sorted(edges[(a, b)])[:3])})" for a, b in pairs)


def test_the_graph_sees_imports_inside_functions_and_relative_imports():
    edges = package_edges()
    assert ("airflow", "channels") in edges  # the operators import the transport inside execute
    assert all(source in LAYERS or source in STANDALONE for source, _ in edges)


def test_no_cycle_between_packages():
    edges = package_edges()
    found = cycles(edges)
    assert found == [], "\n".join(_evidence(edges, list(pairwise(c))) for c in found)


def test_every_import_points_down_the_layers():
    edges = package_edges()
    upward = [
        (source, target)
        for source, target in edges
        if source in LAYERS and target in LAYERS and LAYERS[target] > LAYERS[source]
    ]
    assert upward == [], _evidence(edges, upward)


def test_the_runtime_imports_nothing_from_devtools():
    edges = package_edges()
    users = [(source, target) for source, target in edges if target == "devtools"]
    assert users == [], _evidence(edges, users)


def test_the_sandbox_stands_alone():
    edges = package_edges()
    for package, allowed in STANDALONE.items():
        outside = [(s, t) for s, t in edges if s == package and t not in allowed]
        assert outside == [], _evidence(edges, outside)
