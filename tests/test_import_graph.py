"""The engine's, the kernels' wrappers' and the app's modules import each other without cycles
(top-level or inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import soma_shm

ROOT = Path(soma_shm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """soma_shm modules that ``path`` imports anywhere in its body (not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    return {name: {m for m in _imports(p, name, modules) if not name.startswith(m + ".") and m != "soma_shm"}
            for name, p in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


CHECKED = ("soma_shm.render", "soma_shm.pyramid", "soma_shm.snap", "soma_shm.plans", "soma_shm.engine",
           "soma_shm.results", "soma_shm.options", "soma_shm._files", "soma_shm._validate", "soma_shm.ipc",
           "soma_shm.kernels", "soma_shm.app")


def test_no_import_cycle_runs_through_the_engine_the_wrappers_or_the_app():
    graph = _graph()
    assert "soma_shm.render" in graph and "soma_shm.app.cli" in graph
    ours = [c for c in _cycles(graph) if any(m == p or m.startswith(p + ".") for m in c for p in CHECKED)]
    assert ours == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
