"""The package's layering: no import cycle, no upward import, modules of a readable size.

Layers, bottom to top (an import may only go to a strictly lower layer, or stay inside its own part):
io -> integrity -> paths -> esco -> data, model -> losses, workbench -> ranking -> protocol, integrations -> training,
efficiency, service, enrichment -> cli -> the ``python -m`` shims -> the package root. Every import counts, also one inside a
function (a lazy import is still a dependency); ``if TYPE_CHECKING:`` imports are left out of the layering but
count for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from uwe_lightning.paths import PACKAGE_DIR

ROOT = "uwe_lightning"
LAYERS = {
    "io": 0,
    "integrity": 1,  # data files checked against their manifest when read (paths.data_file)
    "paths": 2,
    "esco": 3,
    "data": 4,
    "model": 4,
    "losses": 5,
    "workbench": 5,
    "ranking": 6,
    "protocol": 7,
    "integrations": 7,  # bridges to other tools (WorkRB): a model + runner over ranking / workbench
    "training": 8,
    "offline": 8,  # offline bundles: a model's fp16 parts + the protocol's derived data + wheels
    "efficiency": 8,
    "studies": 8,
    "service": 8,
    "enrichment": 8,  # LLM-generated training data: protocol (leakage guard) + ranking (merge encoder)
    "cli": 9,
    "train": 10,
    "evaluate": 10,
    "rank": 10,
    "bench": 10,
    "report": 10,
    "serve": 10,
    "export": 10,
    "enrich": 10,
    "bundle": 10,
    "campaign": 10,
    "plan_memory": 10,
    "publish": 10,
    "": 11,  # the package root
}
#: ``python -m`` shims that live inside a lower part, where users look for them; they sit at the shims' layer.
SHIMS = {"uwe_lightning.data.fetch": 10}
MAX_LINES = 400
LONG_MODULE_MARK = "over 400 lines:"  # a longer module says why in its docstring


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, type_checking: bool = False) -> set[str]:
    """The package modules ``name`` imports (a ``from pkg import sub`` of a submodule counts as ``pkg.sub``);
    ``type_checking``: also those under ``if TYPE_CHECKING:``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = set() if type_checking else _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == ROOT or t.startswith(ROOT + "."))
    found.discard(name)
    return {t if t in MODULES else t.rpartition(".")[0] for t in found}


GRAPH = {name: imports_of(name) for name in MODULES}
#: With the typing-only imports: a circle through them is still one that a reader has to follow.
GRAPH_WITH_TYPES = {name: imports_of(name, type_checking=True) for name in MODULES}


def part(name: str) -> str:
    """The top-level part of the package a module belongs to ('' for the root)."""
    rest = name[len(ROOT) + 1 :] if name != ROOT else ""
    return rest.split(".")[0]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (or a self-loop) are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_detector_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_every_part_has_a_layer():
    assert {part(name) for name in MODULES} <= set(LAYERS), sorted({part(n) for n in MODULES} - set(LAYERS))


def test_no_import_cycle():
    assert strongly_connected(GRAPH_WITH_TYPES) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    own = SHIMS.get(name, LAYERS[part(name)])
    upward = [
        target for target in sorted(GRAPH[name])
        if (part(target) != part(name) or target in SHIMS) and SHIMS.get(target, LAYERS[part(target)]) >= own
    ]
    assert not upward, f"{name} (layer {own}) imports {upward} from the same or a higher layer"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    path = MODULES[name]
    n_lines = len(path.read_text().splitlines())
    if n_lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LONG_MODULE_MARK in doc, f"{path} has {n_lines} lines and no '{LONG_MODULE_MARK} <reason>' note"


def test_entry_point_shims_are_thin():
    """``python -m uwe_lightning.<name>`` stays a shim over ``uwe_lightning.cli.<name>``."""
    for shim in ("train", "evaluate", "rank", "bench", "serve", "export", "enrich", "data.fetch", "plan_memory"):
        assert f"{ROOT}.cli.{shim.rpartition('.')[2]}" in GRAPH[f"{ROOT}.{shim}"]
        assert len(MODULES[f"{ROOT}.{shim}"].read_text().splitlines()) <= 25


def test_tools_that_do_not_train_start_without_lightning():
    """Importing Lightning costs ~10 s of a command's start on 2 cores (torch._dynamo, torchmetrics, scipy): every
    entry point but ``train`` (and the package root) must get by without it."""
    import subprocess
    import sys

    tools = ["report", "evaluate", "rank", "serve", "bundle", "campaign", "publish", "export", "enrich", "bench",
             "plan_memory", "data.fetch"]
    code = ("import importlib, sys\n"
            f"for tool in {tools!r}:\n"
            "    importlib.import_module('uwe_lightning.' + tool)\n"
            "    assert 'lightning' not in sys.modules, tool\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
