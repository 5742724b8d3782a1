"""The layout's rules, checked on the source: no import cycle, a core free of the CLI.

Imports are read with ``ast`` from every module of ``opis_cli``, those inside
functions included (a lazy import is still a dependency): data flows one way
(read -> prepare -> engine counts -> curves -> metrics -> result -> render /
gate), so no module may depend, however indirectly, on one that depends on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "opis_cli"

#: the numerical core: no terminal, no CLI framework, no plotting, no file formats
CORE = ("opis_cli.api", "opis_cli.transfer", "opis_cli.prepare", "opis_cli.counts", "opis_cli.options",
        "opis_cli.results", "opis_cli.errors", "opis_cli.engines", "opis_cli.metrics")
CORE_FORBIDDEN = ("typer", "rich", "matplotlib", "click", "pyarrow", "mlflow", "torch",
                  "lightning", "pytorch_lightning")


def modules() -> dict[str, tuple[Path, list[str]]]:
    """``dotted name -> (file, package parts)`` of every module of opis_cli."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = parts
        else:
            pkg = parts[:-1]
        out[".".join(parts)] = (path, pkg)
    return out


MODULES = modules()


def imports(name: str) -> tuple[set[str], set[str]]:
    """(opis_cli modules, other top-level packages) that module ``name`` imports."""
    path, pkg = MODULES[name]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("opis_cli"):
                outer.add(target.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                inner.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("opis_cli"):
                    inner.add(alias.name)
                else:
                    outer.add(alias.name.split(".")[0])
    inner.discard(name)
    return {m for m in inner if m in MODULES}, outer


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    graph = {m: imports(m)[0] for m in MODULES}
    assert cycles(graph) == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith(CORE)))
def test_the_core_imports_no_cli_terminal_plot_or_file_format(name):
    _, outer = imports(name)
    assert not outer & set(CORE_FORBIDDEN), f"{name} imports {sorted(outer & set(CORE_FORBIDDEN))}"


def test_only_the_kernel_modules_import_numba():
    users = sorted(m for m in MODULES if {"numba", "llvmlite"} & imports(m)[1])
    assert users == ["opis_cli.engines._diagnose_kernels", "opis_cli.engines._kernels",
                     "opis_cli.engines._transfer_kernels"]


def test_only_the_integrations_import_trackers_and_training_frameworks():
    """MLflow, torch and Lightning stay behind their extras, in opis_cli/integrations/
    (the torch of .pt files is read in opis_cli/io)."""
    frameworks = {"mlflow", "lightning", "pytorch_lightning"}
    users = sorted(m for m in MODULES if frameworks & imports(m)[1])
    assert users == ["opis_cli.integrations.lightning", "opis_cli.integrations.mlflow"]
