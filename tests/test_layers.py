"""The package's layers as docs/DESIGN.md draws them, checked on its imports.

Every ``import`` of every module under ``proxyfda_cl/`` counts, those inside functions and
under ``TYPE_CHECKING`` included: a module may import from its own layer and from the layers
``ALLOWED`` lists, and no chain of imports may lead back to where it started.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "proxyfda_cl"

#: module or package -> layer; a module takes the layer of its longest listed prefix.
LAYER_OF = {
    "proxyfda_cl": "api",  # the package's __init__ only
    "proxyfda_cl.core": "core",
    "proxyfda_cl.benchmarks": "benchmarks",
    "proxyfda_cl.models": "models",
    "proxyfda_cl.metrics": "metrics",
    "proxyfda_cl.analysis": "analysis",
    "proxyfda_cl.strategies": "strategies",
    "proxyfda_cl.config": "config",
    "proxyfda_cl.training": "training",
    "proxyfda_cl.run": "run",
    "proxyfda_cl.tools": "tools",
    "proxyfda_cl.cli": "cli", "proxyfda_cl.commands": "cli", "proxyfda_cl.__main__": "cli",
}

#: layer -> the other layers it may import from (docs/DESIGN.md, "Layers").
ALLOWED = {
    "core": set(),
    "benchmarks": {"core"},
    "models": {"core", "benchmarks"},
    "metrics": {"core"},
    "analysis": {"core"},
    "strategies": {"core"},
    "config": {"core", "strategies"},
    "training": {"core", "models", "metrics", "config"},
    "run": {"core", "benchmarks", "models", "metrics", "strategies", "config", "training"},
    "tools": {"benchmarks", "models", "strategies", "training"},
    "cli": {"core", "benchmarks", "models", "analysis", "strategies", "config", "run", "tools"},
    "api": {"core", "config"},
}

#: the Python files the package root may hold (the package's face; every other module lives
#: in the folder of its stage).
ROOT_FILES = {"__init__.py", "__main__.py", "cli.py", "commands.py", "config.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports: a name that is a submodule counts as that
    submodule, any other name as the module it is read from."""
    path = MODULES[module]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, path, node)
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES and name.startswith("proxyfda_cl."):
                name = name.rsplit(".", 1)[0]  # ``import proxyfda_cl.x.y`` of a module's name
            if name in MODULES and name != module:
                out.add(name)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> str:
    if module == "proxyfda_cl":
        return LAYER_OF[module]
    prefixes = [p for p in LAYER_OF if p != "proxyfda_cl" and (module == p or
                                                               module.startswith(p + "."))]
    if not prefixes:
        pytest.fail(f"{module} has no layer: add it to LAYER_OF here and to docs/DESIGN.md")
    return LAYER_OF[max(prefixes, key=len)]


def test_the_package_root_holds_only_its_face():
    assert {p.name for p in ROOT.glob("*.py")} <= ROOT_FILES
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert {f"proxyfda_cl.{f}" for f in folders} <= set(LAYER_OF), "a folder without a layer"


def test_every_module_has_a_layer_and_every_layer_a_rule():
    assert {layer_of(m) for m in MODULES} <= set(ALLOWED)
    assert all(layers <= set(ALLOWED) for layers in ALLOWED.values())


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    assert "proxyfda_cl.analysis.correlation" in GRAPH["proxyfda_cl.analysis.plots"]
    assert "proxyfda_cl.run.runner" in GRAPH["proxyfda_cl.commands"]  # imported inside a function
    assert "proxyfda_cl.models" in GRAPH["proxyfda_cl.run.runner"]  # ``from ..models import ...``


def test_the_table_lists_only_arrows_the_code_has():
    """``ALLOWED`` (and the drawing in docs/DESIGN.md) is what the code imports, not a looser
    promise: an arrow nothing uses is taken out, so that adding one is a visible decision."""
    used: dict = {}
    for m, targets in GRAPH.items():
        for t in targets:
            if layer_of(t) != layer_of(m):
                used.setdefault(layer_of(m), set()).add(layer_of(t))
    unused = {layer: sorted(allowed - used.get(layer, set()))
              for layer, allowed in ALLOWED.items() if allowed - used.get(layer, set())}
    assert not unused, f"arrows no module uses: {unused}"


def test_every_arrow_points_down_the_layers():
    wrong = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
             for m, targets in sorted(GRAPH.items()) for t in sorted(targets)
             if layer_of(t) != layer_of(m) and layer_of(t) not in ALLOWED[layer_of(m)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_arrows_the_design_singles_out():
    def reach(prefix: str) -> set:
        return {t for m, ts in GRAPH.items() if m.startswith(prefix) for t in ts}

    assert not {t for t in reach("proxyfda_cl.strategies") if t.startswith("proxyfda_cl.benchmarks")}
    assert not {t for t in reach("proxyfda_cl.analysis")
                if t.startswith(("proxyfda_cl.strategies", "proxyfda_cl.run.runner"))}
    # the tiny encoder pre-trains on the concept world's generator, and reads no dataset
    assert {t for t in reach("proxyfda_cl.models")
            if t.startswith("proxyfda_cl.benchmarks")} <= {"proxyfda_cl.benchmarks.world"}


def test_no_import_cycle():
    """Depth-first search over the module graph; the first cycle found is reported."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_no_warning_filter_without_a_category_or_a_module():
    """The suite's own warnings can change a number: nothing in the package silences every
    warning at once (``warnings.filterwarnings("ignore")`` or ``simplefilter("ignore")``)."""
    blanket = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("filterwarnings", "simplefilter")):
                kws = {k.arg for k in node.keywords}
                if len(node.args) < 2 and not kws & {"category", "module"}:
                    blanket.append(f"{module}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "disable" and getattr(node.func.value, "id", "") == "logging"
                    and module != "proxyfda_cl.models.openclip"):  # scoped there, and restored
                blanket.append(f"{module}:{node.lineno} (logging.disable)")
    assert not blanket, blanket
