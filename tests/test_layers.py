"""The house rules of docs/architecture.md, "The layers", checked mechanically: layers point down,
no cycles.

Every `import` and `from … import` of every module under daycare_cli/ is read with `ast`
(also those under `if TYPE_CHECKING:` and inside functions: a lazy import is still a
dependency), and each edge between two of our modules is checked against the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "daycare_cli"

# What each layer may import (besides itself). `config` and `client` sit at the store
# level: config reads paths; the client talks to the daemon for the CLI only.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "store": {"core", "root"},
    "config": {"store", "core", "root"},
    "run": {"store", "core", "config", "root"},
    "daemon": {"run", "store", "core", "config", "root"},
    "client": {"store", "core", "config", "root"},
    "cli": {"daemon", "run", "store", "core", "config", "client", "root"},
    "main": {"cli", "root"},
    "root": set(),
}


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    first = parts[1]
    if first in ("core", "store", "run", "daemon", "cli"):
        return first
    return {"config": "config", "client": "client", "__main__": "main"}.get(first, "root")


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of `package` it imports (relative too)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for here, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        pkg = here if path.name == "__init__.py" else here.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    # `from daycare_cli.core import schedule` names a module.
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
        graph[here] = {m for m in found if m in modules and m != here}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every edge that points up a layer (or sideways into a layer not allowed)."""
    return [
        f"{module} ({layer(module)}) imports {other} ({layer(other)})"
        for module in sorted(graph)
        for other in sorted(graph[module])
        if layer(other) != layer(module) and layer(other) not in LAYERS[layer(module)]
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package importing its own submodules aside)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return [c for c in found if not any(m.count(".") == 0 for m in c)]


GRAPH = import_graph(PACKAGE)


def test_the_package_has_the_layers_it_claims() -> None:
    assert {"core", "store", "run", "daemon", "cli"} <= {layer(m) for m in GRAPH}


def test_imports_point_down_a_layer() -> None:
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_no_import_cycles() -> None:
    found = cycles(GRAPH)
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: fed a tiny package with both faults, they find them."""
    pkg = tmp_path / "daycare_cli"
    (pkg / "core").mkdir(parents=True)
    (pkg / "cli").mkdir()
    for init in (pkg, pkg / "core", pkg / "cli"):
        (init / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from daycare_cli.cli import b\n")
    (pkg / "cli" / "b.py").write_text("from ..core.a import f\n")
    graph = import_graph(pkg)
    assert graph["daycare_cli.core.a"] == {"daycare_cli.cli.b"}
    assert graph["daycare_cli.cli.b"] == {"daycare_cli.core.a"}
    assert upward_imports(graph) == ["daycare_cli.core.a (core) imports daycare_cli.cli.b (cli)"]
    assert cycles(graph) == [["daycare_cli.cli.b", "daycare_cli.core.a", "daycare_cli.cli.b"]]
