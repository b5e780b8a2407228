"""Imports run downward only: contract modules < data < inference < evaluation < training < app < lab < cli."""

import ast
from pathlib import Path

from conftest import REPO

LAYERS = ("contract", "data", "inference", "evaluation", "training", "app", "lab", "cli")


def layer(module: str) -> int:
    """The layer of ``hemseg.<part>...``: a subpackage's, the cli's (``python -m hemseg`` too), or the contract's
    (the other top-level modules)."""
    part = module.split(".")[1].replace("__main__", "cli")
    return LAYERS.index(part) if part in LAYERS else 0


def hemseg_imports(path: Path) -> set[str]:
    """The hemseg modules a file imports (its own package's name for ``from hemseg import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hemseg"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("hemseg"))
    return found


def test_no_module_imports_a_higher_layer():
    package = REPO / "hemseg"
    upward = []
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if module == "hemseg":  # the package's front door re-exports Segmenter and UNet
            continue
        for imported in hemseg_imports(path):
            if imported == "hemseg" or layer(imported) > layer(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, upward
    assert (
        layer("hemseg.lab.bench") > layer("hemseg.training.run") > layer("hemseg.data.prepare") > layer("hemseg.model")
    )
