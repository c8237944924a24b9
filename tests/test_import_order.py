"""Imports flow one way: cli -> runner/report -> train -> evaluate -> engine/build/results -> methods -> quant,
with data/, models/ and the recipe schema as leaves (docs: ARCHITECTURE.md). Every import in bvbench/, at module
level or inside a function, is checked against that order by walking the sources with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bvbench"

# Longest prefix wins. A module may import a module of lower rank, or any module of its own package.
RANKS: dict[str, int] = {
    "bvbench": 0,  # the package root: __version__, and the API loaded on first use (ALLOWED)
    "bvbench.errors": 0,
    "bvbench.registry": 1,
    "bvbench.threads": 1,  # thread settings: os and errors only (the CLI calls it before torch loads)
    "bvbench.data": 2,
    "bvbench.models": 2,
    "bvbench.quant": 2,
    "bvbench.recipes": 2,  # schema, method option models, loading: pydantic and YAML only
    "bvbench.methods": 3,
    "bvbench.build": 4,
    "bvbench.results": 4,
    "bvbench.engine": 4,  # kernels and compile_model (quant only): evaluate builds the engine from a .bvb file
    "bvbench.evaluate": 5,
    "bvbench.train": 6,
    "bvbench.runner": 7,
    "bvbench.report": 7,
    "bvbench.nightly": 8,
    "bvbench.migrate": 8,  # the run-id migration tool: runner.identity, recipes, results
    "bvbench.cli": 8,
    "bvbench.api": 8,  # the notebook API: runner, report, evaluate
    "bvbench.__main__": 9,
}

ALLOWED: set[tuple[str, str]] = {
    ("bvbench", "bvbench.api"),  # the package's __getattr__ loads the notebook API on first use (bvbench.run)
    ("bvbench", "bvbench.methods"),  # the same for `bvbench.methods` (import bvbench; bvbench.methods.apply)
}
"""(importer, imported) pairs that break the order on purpose, each with its reason."""


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank_key(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in RANKS:
            return key
    raise KeyError(module)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(bvbench module, line) for every import in the file; `import a.b.c` also runs a and a.b's __init__."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name == "bvbench" or name.startswith("bvbench."):
                parts = name.split(".")
                out += [(".".join(parts[:n]), node.lineno) for n in range(2, len(parts) + 1)]
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    bad: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = rank_key(module)
        tree = ast.parse(path.read_text(), str(path))
        for name, line in imported_modules(tree, module, path.name == "__init__.py"):
            try:
                key = rank_key(name)
            except KeyError:
                continue  # a name imported from a module (`from bvbench.x import f`), not a module
            if key == "bvbench" or own.split(".")[:2] == key.split(".")[:2] or (module, key) in ALLOWED:
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            if RANKS[key] >= RANKS[own] and where not in bad:
                bad[where] = f"{where}: {module} (rank {RANKS[own]}) imports {key} (rank {RANKS[key]})"
    return sorted(bad.values())


def test_every_module_has_a_rank() -> None:
    for path in PACKAGE.rglob("*.py"):
        rank_key(module_name(path))  # KeyError: place the new package in RANKS


def test_imports_follow_the_layer_order() -> None:
    assert violations() == []


@pytest.mark.parametrize("importer, line", [
    ("quant/lsq.py", "from bvbench.methods import METHODS\n"),  # quant must not know methods
    ("models/__init__.py", "from bvbench.recipes.schema import ModelConfig\n"),  # models take plain arguments
    ("build.py", "def f():\n    from bvbench.runner import Runner\n"),  # hidden in a function: still caught
])
def test_a_reverse_import_is_caught(tmp_path: Path, importer: str, line: str) -> None:
    import shutil

    copy = tmp_path / "bvbench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "csrc", "*.so"))
    target = copy / importer
    target.write_text(target.read_text() + "\n" + line)
    found = violations(copy)
    assert len(found) == 1 and importer in found[0], found
