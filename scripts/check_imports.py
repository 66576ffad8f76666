#!/usr/bin/env python3
"""Import rules of the mmsearch package: which package may import which, and no
import cycles between modules. Run by `make lint`; exits 1 naming each violation.

Every import counts, also one deferred inside a function: a deferred import
still couples the modules and only hides the cycle from the interpreter.

    python scripts/check_imports.py [ROOT]     (ROOT: the repository, default: here)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "mmsearch"
# Package (first level under mmsearch) -> packages it may import. v1 is the
# generated API and may be imported by all. See docs/architecture.md.
ALLOWED: dict[str, frozenset[str]] = {
    "v1": frozenset(),
    "stores": frozenset({"v1"}),
    "kit": frozenset({"v1"}),
    "clients": frozenset({"v1", "kit", "stores"}),
    "embedder": frozenset({"v1", "kit", "clients"}),
    "reranker": frozenset({"v1", "kit", "clients"}),
    "indexer": frozenset({"v1", "kit", "clients", "stores"}),
    "searcher": frozenset({"v1", "kit", "clients", "stores"}),
    "producer": frozenset({"v1", "kit"}),
    "edge": frozenset({"v1", "kit", "clients", "stores"}),
    # The HTTP gateway calls the services over gRPC only; it publishes uploads with the SDK.
    "gateway": frozenset({"v1", "kit", "clients", "producer"}),
    "modules": frozenset(
        {"v1", "kit", "clients", "stores", "edge", "embedder", "indexer", "searcher", "reranker", "gateway"}
    ),
    "dev": frozenset({"v1", "kit", "clients"}),
    "cli": frozenset({"v1", "kit", "clients", "modules", "producer", "dev"}),
}


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    base = root / PACKAGE
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[1:2] == ("v1",):
            continue  # generated
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The mmsearch modules `name` imports, with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [] if module == PACKAGE else [module]
            # `from mmsearch.x import y` may name a submodule y.
            targets += [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield target, node.lineno


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check(root: Path) -> list[str]:
    found = dict(modules(root))
    known = set(found)
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        source = package_of(name)
        for target, line in imported(name, path, known):
            dest = package_of(target)
            where = f"{path.relative_to(root)}:{line}"
            if source not in ALLOWED:
                problems.append(f"{where}: package mmsearch.{source} is not in the import rules")
            elif dest != source and dest not in ALLOWED[source]:
                problems.append(f"{where}: mmsearch.{source} must not import {target}")
            # Edges to a package's __init__ are kept only when it is a module we scan.
            if target in known and target != name:
                graph[name].add(target)
            elif target not in known:
                parent = target.rsplit(".", 1)[0]
                if parent in known and parent != name:
                    graph[name].add(parent)
    for component in cycles(graph):
        problems.append("import cycle: " + " -> ".join(component))
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} import rule violation(s); the rules: scripts/check_imports.py", file=sys.stderr
        )
        return 1
    print(f"import rules: {len(list(modules(root)))} modules, no cross-service import, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
