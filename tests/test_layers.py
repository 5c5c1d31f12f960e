"""Data flows one way: no module imports a higher layer, so there is no import cycle.

Every import is read from the source, the ones inside functions too (a lazy import is still
a dependency). A package's ``__init__`` counts as its own layer's module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Lowest first: a module may import its own layer and the ones before it, never one after.
LAYERS = (
    ("config", "ihuyi", "worker"),
    ("worker.errors",),
    ("worker.stores",),
    ("worker.sending",),
    ("worker.broker", "worker.ops"),
    ("worker.celeryconf", "worker.app"),
    ("tasks",),
    ("cli",),
)


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix naming ``module`` (``worker`` alone is only its docstring)."""
    matches = [(len(prefix), level) for level, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("config", "ihuyi", "worker", "tasks", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module, path", modules(), ids=[m for m, _ in modules()])
def test_no_module_imports_a_higher_layer(module, path):
    own = layer_of(module)
    assert own is not None, f"{module} is in no layer: add it to LAYERS"
    higher = sorted(name for name in imports_of(path) if (layer_of(name) or 0) > own)
    assert not higher, f"{module} (layer {own}) imports {higher}"
