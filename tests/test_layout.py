"""The library's shape: subpackages that mirror the DAG's stages, layered without import circles, and
modules short enough to read (the structure docs/development.md describes)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolshift"

LAYERS: tuple[str, ...] = (
    "",  # toolshift/__init__.py, errors.py, contracts.py, files.py: what every stage reads
    "datasets",
    "episodes",
    "models",
    "analysis",
    "inference",
    "judges",
    "checks",
    "common",
    "report",
    "bench",
)
"""Lowest first: a module may import from its own layer and the layers before it, never from a later one."""

LONG_MODULES: dict[str, str] = {
    "datasets/sources.py": "one table of data: the benchmark sources (files, hashes, columns, licences)",
    "contracts.py": "one table of data: every file contract's column list, each written once",
}
"""Modules allowed past MAX_LINES, each with the reason."""

MAX_LINES = 500


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ""
    return LAYERS.index(sub)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__main__.py"}


def imports_of(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """Every toolshift module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            # `from pkg import submodule` uses the submodule; `from module import name` uses the module
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            names = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("toolshift") and name != module:
                found.add(name)
    return found


MODULES = library_modules()
GRAPH = {m: imports_of(p, m, MODULES) for m, p in MODULES.items()}


def test_every_subpackage_is_a_layer():
    subpackages = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS) - {""}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_reaches_a_later_layer(module):
    later = sorted(i for i in GRAPH[module] if i != "toolshift" and layer_of(i) > layer_of(module))
    assert not later, f"{module} (layer {LAYERS[layer_of(module)]!r}) imports later layers: {later}"


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_short(path):
    rel = str(path.relative_to(PACKAGE))
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES or rel in LONG_MODULES, f"toolshift/{rel} has {n} lines (> {MAX_LINES})"


SCRIPTS = sorted((PACKAGE.parent / "workflow_scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_rule_scripts_import_the_installed_package(script):
    """No rule script edits sys.path: toolshift is installed in the rules' environment."""
    assert "sys.path" not in script.read_text(encoding="utf-8"), script.name


def test_every_rule_script_is_named_after_a_rule_that_runs_it():
    rules = {}
    for smk in (PACKAGE.parent / "rules").glob("*.smk"):
        text = smk.read_text(encoding="utf-8")
        for rule, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)", text, re.M | re.S):
            for script in re.findall(r'"\.\./workflow_scripts/(\w+)\.py"', body):
                rules.setdefault(script, set()).add(rule)
    assert set(rules) == {p.stem for p in SCRIPTS}
    for script, by in rules.items():
        assert script in by, f"workflow_scripts/{script}.py is run by rules {sorted(by)}, none named {script}"
