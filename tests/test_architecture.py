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
    assert users == ["opis_cli.engines._diagnose_kernels", "opis_cli.engines._jit",
                     "opis_cli.engines._kernels", "opis_cli.engines._transfer_kernels"]


def test_only_the_integrations_import_trackers_and_training_frameworks():
    """MLflow, torch and Lightning stay behind their extras, in opis_cli/integrations/
    (the torch of .pt files is read in opis_cli/io)."""
    frameworks = {"mlflow", "lightning", "pytorch_lightning"}
    users = sorted(m for m in MODULES if frameworks & imports(m)[1])
    assert users == ["opis_cli.integrations.lightning", "opis_cli.integrations.mlflow"]


def _importers(package: str, target: str) -> dict[str, list[str]]:
    """``module -> the target modules it imports`` for the modules of ``package``
    that import a module of ``target`` (lazy imports included)."""
    out = {}
    for m in sorted(MODULES):
        if m == package or m.startswith(package + "."):
            hit = sorted(t for t in imports(m)[0] if t == target or t.startswith(target + "."))
            if hit:
                out[m] = hit
    return out


#: known exceptions, each to be removed (not added to) by a later change: the
#: gate formats its messages with ``render/format.py``'s number formatting
#: (pure Python)
GATE_IMPORTS_RENDER = {"opis_cli.gate.compare": ["opis_cli.render.format"],
                       "opis_cli.gate.rules": ["opis_cli.render.format"]}


def test_the_import_checker_sees_lazy_imports():
    assert "opis_cli.memory" in imports("opis_cli.io.dataset")[0]
    assert _importers("opis_cli.cli", "opis_cli.engines")  # the CLI builds engines


def test_io_does_not_import_engines():
    """Readers come before any engine (data flows one way); they check an input's
    memory with ``opis_cli.memory``."""
    assert _importers("opis_cli.io", "opis_cli.engines") == {}


def test_gate_does_not_import_render():
    """Rules and comparisons are computed, then rendered: never the other way."""
    assert _importers("opis_cli.gate", "opis_cli.render") == GATE_IMPORTS_RENDER


def _engine_name_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` that compare something with an engine name
    (``x == "dask"``, ``x in ("exact", "dask")``, ``"knn" != x``)."""

    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False

    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Compare)
                  and any(named(n) for n in [node.left, *node.comparators]))


def test_the_name_checker_finds_comparisons():
    names = {"exact", "dask"}
    src = 'a = x == "dask"\nb = y in ("exact", "z")\nc = "exact"\nd = z == "flat"\n'
    assert _engine_name_comparisons(src, names) == [1, 2]


def test_engine_names_are_compared_only_in_the_registry():
    """The API and the CLI ask an engine's capabilities (engines/registry.py),
    never its name."""
    from opis_cli.engines.registry import NAMES

    found = {}
    for m, (path, _) in sorted(MODULES.items()):
        if m == "opis_cli.engines.registry":
            continue
        lines = _engine_name_comparisons(path.read_text(encoding="utf-8"), set(NAMES))
        if lines:
            found[m] = lines
    assert found == {}


def test_inputs_are_read_and_evaluated_by_the_application_layer():
    """``opis_cli/app.py`` owns "read an input and evaluate it": no other module
    outside ``io`` reads a dataset, the gate reads no input format, and the
    application layer sits below the command line, the gate and the renderers."""
    callers = sorted(m for m, (path, _) in MODULES.items()
                     if not (m == "opis_cli.io" or m.startswith("opis_cli.io."))
                     and _calls(path.read_text(encoding="utf-8"), "read_dataset"))
    assert callers == ["opis_cli.app"]
    readers = {"opis_cli.io.dataset", "opis_cli.io.formats", "opis_cli.io.saved",
               "opis_cli.io.curves", "opis_cli.io.shards"}
    assert not {t for m in MODULES if m.startswith("opis_cli.gate")
                for t in imports(m)[0]} & readers
    above = ("opis_cli.cli", "opis_cli.gate", "opis_cli.render")
    assert not [t for t in imports("opis_cli.app")[0] if t.startswith(above)]


def _calls(source: str, name: str) -> bool:
    """Whether ``source`` calls a function named ``name`` (``f(...)`` or ``m.f(...)``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (
                    isinstance(f, ast.Attribute) and f.attr == name):
                return True
    return False


def test_the_call_finder_sees_plain_and_dotted_calls():
    assert _calls("read_dataset(p)", "read_dataset")
    assert _calls("io.read_dataset(p, x=1)", "read_dataset")
    assert not _calls("x = read_dataset", "read_dataset")
