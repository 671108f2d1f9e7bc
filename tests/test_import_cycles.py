"""Imports run one way, down the layers: no module of framework/ imports, even inside a function or
under ``if TYPE_CHECKING:``, a module that imports it back. A type-only import is still a
dependency a reader has to follow: a part that names the part composing it knows too much."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "framework"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(tree: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The framework modules ``module`` imports: ``from a.b import c`` is ``a.b.c`` when that is a
    module (importing a package's submodule does not import the siblings its __init__ lists)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            found.update(subs if len(subs) == len(node.names) else subs + [base])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    resolved = set()
    for name in found:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles_in_the_package():
    modules = _modules()
    graph = {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", modules)
        for name, path in modules.items()
    }
    cycles = _cycles(graph)
    assert not cycles, "import cycles (each line: modules that import one another):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_check_sees_a_cycle_through_a_function_level_import():
    modules = {"p.a": Path("a.py"), "p.b": Path("b.py")}
    a = ast.parse("from p.b import x\n")
    b = ast.parse("def f():\n    from p.a import y\n")
    graph = {"p.a": _imports(a, "p.a", False, modules), "p.b": _imports(b, "p.b", False, modules)}
    assert _cycles(graph) == [["p.a", "p.b"]]
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import y\n")
    assert _cycles({**graph, "p.b": _imports(guarded, "p.b", False, modules)}) == [["p.a", "p.b"]]
    unrelated = ast.parse("def f():\n    from p.c import z\n")
    assert _cycles({**graph, "p.c": set(),
                    "p.b": _imports(unrelated, "p.b", False, {**modules, "p.c": Path("c.py")})}) == []
