"""The house has one direction: configs → metrics → agents → tasks → flows → the CLI (mora/),
with storage beside agents (used by tasks, flows and the CLI). This reads every import of the
product's code, lazy ones inside functions included, and fails on one that runs up a layer and on
any import circle between files. docs/ARCHITECTURE.md draws the same table for a reader."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What each top-level package may import from this repo (itself included). One table, read by
# both tests below.
MAY_IMPORT: dict[str, set[str]] = {
    "configs": {"configs"},
    "metrics": {"configs", "metrics"},
    "agents": {"configs", "metrics", "agents"},
    "storage": {"configs", "storage"},
    "tasks": {"configs", "metrics", "agents", "storage", "tasks"},
    "flows": {"configs", "metrics", "agents", "storage", "tasks", "flows"},
    "mora": {"configs", "metrics", "agents", "storage", "tasks", "flows", "mora"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in MAY_IMPORT for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The repo modules ``name`` imports, resolved to files (``from pkg import mod`` names the
    module ``pkg.mod`` when that is a file, else ``pkg``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_no_import_runs_up_a_layer():
    upward = [f"{name} imports {target}"
              for name, targets in _graph().items() for target in sorted(targets)
              if target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]]
    assert upward == [], "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == [], "\n".join(" -> ".join(c) for c in circles)


def test_the_table_reads_real_imports():
    """The graph is not empty by accident: the CLI reaches the flows, the flows the tasks."""
    graph = _graph()
    assert any(t.startswith("flows.") for name in graph if name.startswith("mora.")
               for t in graph[name])
    assert any(t.startswith("tasks.") for t in graph["flows.text_to_video"])
