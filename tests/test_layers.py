"""The package's layering, checked from its source: a module imports only modules of lower layers (or its own
package), wherever the import stands, so that no import cycle can form and a reader can find
any part by its floor (the order in ``dropnotes/__init__.py``'s docstring)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dropnotes"

# From the bottom up; one number a floor. A module may import only from floors below its own (the package's
# ``__init__`` holds nothing but its version and docstring, so every floor may import it).
LAYERS = {
    "dropnotes": 0,
    "runtime": 1, "amp": 1, "metrics": 1, "verdict": 1,
    "functional": 2, "data": 2,
    "layers": 3, "bench": 3,
    "models": 4, "mc": 4, "train": 4,
    "stacked": 5,
    "ensemble": 6, "results": 6, "stats": 6, "costmodel": 6,
    "experiments": 7, "notebooks": 7,
    "scorecard": 8, "sweep": 8, "estimate": 8,
    "page": 9, "book": 9,
    "cli": 10,
    "__main__": 11,
}


def _component(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "dropnotes"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, the dropnotes component imported) for every import in ``path``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dropnotes":
            if node.module == "dropnotes":  # from dropnotes import x, y: each a component
                out += [(node.lineno, a.name) for a in node.names]
            else:
                out.append((node.lineno, _component(node.module)))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, _component(a.name)) for a in node.names if a.name.split(".")[0] == "dropnotes"]
    return out


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _own(path: Path) -> str:
    """The component a source file belongs to (``dropnotes`` for the package's own ``__init__``)."""
    if path == PACKAGE / "__init__.py":
        return "dropnotes"
    return _component("dropnotes." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_module_has_a_floor():
    missing = {_own(p) for p in _modules()} - set(LAYERS)
    assert not missing, f"add these to LAYERS: {sorted(missing)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_lower_floors(path):
    own = _own(path)
    bad = [f"line {line}: {own} (floor {LAYERS[own]}) imports {what} (floor {LAYERS.get(what, '?')})"
           for line, what in _imports(path) if what != own and what != "dropnotes"
           and LAYERS.get(what, 99) >= LAYERS[own]]
    assert not bad, "; ".join(bad)


# The documented exceptions to module-level imports: (file, the module imported) -> why.
LOCAL_IMPORTS = {
    ("experiments/_base.py", "dropnotes.experiments"): "the registry imports every chapter, and every chapter imports "
                                                       "_base: it is read at first use (the one cycle-breaker)",
    ("stacked/optim.py", "dropnotes.stacked.mlp"): "a type annotation only (typing.TYPE_CHECKING)",
}


def test_the_package_imports_itself_at_module_level():
    """Every import of a dropnotes module stands at the top of its file (``dropnotes/__init__.py`` says so), but for
    :data:`LOCAL_IMPORTS`, each with its reason."""
    nested = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    if name and name.split(".")[0] == "dropnotes" and \
                            (str(path.relative_to(PACKAGE)), name) not in LOCAL_IMPORTS:
                        nested.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name} inside a block")
    assert not nested, "; ".join(nested)
