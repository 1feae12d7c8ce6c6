"""The package's layers import one way (model <- sim <- inputs <- search <- analysis <- study
<- api <- plans <- cli), nothing below the command line imports argparse or the CLI, and at
most six modules stay flat in ``cpo_opt/``. Parsed from the source, so it cannot drift."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "cpo_opt"
ORDER = ["runtime", "model", "sim", "inputs", "search", "analysis", "study", "api", "plans",
         "cli"]
"""Layer rank: a module may import only its own layer and those before it."""
FREE = {"__init__", "__main__"}
"""Flat entry modules that may import anything."""


def _layer(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            if node.module == "cpo_opt":
                for a in node.names:
                    yield node.lineno, f"cpo_opt.{a.name}"


MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_layer_order(path):
    layer = _layer(path)
    if layer in FREE:
        return
    assert layer in ORDER, f"{path}: module outside the known layers {ORDER}"
    rank = ORDER.index(layer)
    for line, name in _imports(path):
        if name in ("argparse",) and layer != "cli":
            pytest.fail(f"{path}:{line}: imports argparse below the command line")
        if not name.startswith("cpo_opt."):
            continue
        target = name.split(".")[1]
        if target in FREE or target == "__version__":
            continue
        assert target in ORDER, f"{path}:{line}: imports unknown {name}"
        assert ORDER.index(target) <= rank, (
            f"{path}:{line}: layer {layer!r} imports {name} of the higher layer {target!r}")


def test_few_flat_modules():
    flat = sorted(p.stem for p in PKG.glob("*.py"))
    assert len(flat) <= 6, flat


def test_no_library_module_flips_x64():
    for path in MODULES:
        if _layer(path) in ("runtime", "cli"):
            continue
        assert "jax_enable_x64\", True" not in path.read_text(), path


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts)


def test_no_import_circles_between_modules():
    """No two modules import each other, directly or around a longer circle (function-level
    imports included: a circle there is the same tangle, only deferred). Package
    ``__init__`` files, which re-export, are left out."""
    names = {_module_name(p): p for p in MODULES if p.stem != "__init__"}
    graph: dict[str, set[str]] = {n: set() for n in names}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for t in targets:
                if t in names and t != name:
                    graph[name].add(t)
    # Tarjan's strongly connected components
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, circles
