"""The import rule of ARCHITECTURE.md, "Layers": no circles between modules, no import from a higher layer, none
between two packages of one layer. Imports are read with ``ast`` at any depth (function-local and
``TYPE_CHECKING`` ones too), so a lazy import cannot hide an arrow."""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "reidkit"


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module of reidkit, and where it is written."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.source} imports {self.target}"


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module under reidkit/ by dotted name -> (file, whether it is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _owner(name: str, known: dict[str, tuple[Path, bool]]) -> str | None:
    """The module ``name`` lives in: itself, or the nearest enclosing module (``pkg.func`` -> ``pkg``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports() -> list[Import]:
    """Every import of one reidkit module by another, written anywhere in the source."""
    known = modules()
    found: list[Import] = []
    for source, (path, is_package) in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = source.split(".") if is_package else source.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod
                names = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
            for name in names:
                if name.split(".")[0] != "reidkit":
                    continue
                target = _owner(name, known)
                if target is not None and target != source:
                    found.append(Import(source, target, path, node.lineno))
    return found


def layers() -> dict[str, int]:
    """ARCHITECTURE.md's layer list: top-level name under reidkit/ -> layer number (0 is the bottom)."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- layers:.*?-->(.*?)<!-- /layers -->", text, re.S)
    assert block, "ARCHITECTURE.md has no <!-- layers: ... --> ... <!-- /layers --> list"
    table: dict[str, int] = {}
    for line in block.group(1).strip().splitlines():
        match = re.fullmatch(r"(\d+)\. (.+)", line.strip())
        assert match, f"ARCHITECTURE.md, layers: cannot read {line!r} (expected '<n>. `name`, `name`')"
        for name in re.findall(r"`([^`]+)`", match.group(2)):
            assert name not in table, f"ARCHITECTURE.md, layers: {name} is in two layers"
            table[name] = int(match.group(1))
    return table


def group(module: str) -> str:
    """The name a module's layer is given by: its top-level package or module under reidkit (the package's
    own __init__ is ``reidkit``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "reidkit"


def test_the_scan_sees_lazy_and_relative_imports() -> None:
    """The scanner itself: a function-local import and a ``from package import submodule`` are found."""
    edges = {(i.source, i.target) for i in imports()}
    assert ("reidkit.engine.config", "reidkit.models.registry") in edges  # inside a function
    assert ("reidkit.commands.eval", "reidkit.data.multi") in edges


def test_every_module_has_a_layer() -> None:
    table = layers()
    missing = sorted({group(m) for m in modules()} - set(table))
    assert not missing, (f"modules under reidkit/ with no layer in ARCHITECTURE.md, 'Layers': {missing}; "
                         "add each to the list")


def test_no_import_cycle() -> None:
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules()}
    for imp in imports():
        graph[imp.source].setdefault(imp.target, imp)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[Import]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:  # an arrow back into the current path closes a circle
                circle = [*path[path.index(target):], target]
                cycles.append([graph[a][b] for a, b in itertools.pairwise(circle)])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles (ARCHITECTURE.md, 'Layers'):\n" + "\n".join(
        "  " + "\n    ".join(map(str, cycle)) for cycle in cycles)


def test_imports_point_down_the_layers() -> None:
    table = layers()
    wrong = []
    for imp in imports():
        src, dst = group(imp.source), group(imp.target)
        if src == dst or src not in table or dst not in table:
            continue  # within one package; a module with no layer fails test_every_module_has_a_layer
        if table[dst] >= table[src]:
            how = "the same layer" if table[dst] == table[src] else "a higher layer"
            wrong.append(f"{imp}  ({src}, layer {table[src]}, imports {dst}, {how}: {table[dst]})")
    assert not wrong, "imports against ARCHITECTURE.md, 'Layers':\n  " + "\n  ".join(wrong)
