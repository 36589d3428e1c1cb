"""The shape of the package: layers import only downwards, keys are named in one place.

See docs/architecture.md. Read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "flue_models"

#: Each module's layer, from the bottom; a module may import only its layer and below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "config", "replies", "terminal", "telemetry", "client", "slots"),
    ("keys", "inspection", "embedded", "scripts"),
    ("connection",),
    ("model",),
    ("state",),
    ("schema",),
    ("startup",),
    ("web",),
    ("demo", "cli", "__init__"),
]
#: The one cycle every ORM has: a model starts a query, a query returns models.
ALLOWED_CYCLE = {"flue_models.model.base", "flue_models.model.query"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    head = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(LAYERS):
        if head in names:
            return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS and docs/architecture.md")


def runtime_imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING``."""
    found: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def imported_modules(node: ast.ImportFrom | ast.Import, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    found = set()
    for alias in node.names:  # `from pkg import mod` imports pkg.mod, else names of pkg
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in known else node.module)
    return {n for n in found if n in known}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for node in runtime_imports(path) for m in imported_modules(node, set(files))}
        - {name}
        for name, path in files.items()
    }


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{importer} (layer {layer_of(importer)}) imports {imported} (layer {layer_of(imported)})"
        for importer, imports in graph().items()
        for imported in imports
        if layer_of(imported) > layer_of(importer)
    ]
    assert not upward


def test_no_import_cycle_but_model_and_query() -> None:
    edges = graph()
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                if set(cycle) != ALLOWED_CYCLE and cycle not in cycles:
                    cycles.append(cycle)
            elif len(path) < 12:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    assert not cycles


def test_no_private_name_is_imported_across_packages() -> None:
    crossing = []
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        for node in runtime_imports(path):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            source_package = node.module.rsplit(".", 1)[0]
            importer_package = (
                importer if path.name == "__init__.py" else importer.rsplit(".", 1)[0]
            )
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private and source_package != importer_package and node.module != importer_package:
                crossing.append(f"{importer} imports {private} from {node.module}")
    assert not crossing


def test_key_names_are_built_only_in_keys_py() -> None:
    key_fstring = re.compile(r"f[\"'][^\"']*\{[^}]*(prefix|keys|meta|base)[^}]*\}:")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "keys.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if key_fstring.search(line)
    ]
    assert not found


def test_no_collection_name_is_a_literal_outside_its_meta() -> None:
    names = {"submission", "session", "workflow_run"}
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "keys.py"  # doctest examples of the key layout
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if any(f'"{n}"' in line for n in names) and "collection = " not in line
    ]
    assert not found
