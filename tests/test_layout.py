"""The package's layout holds: imports run one way, each library has one home, ids one grammar.

docs/architecture.md draws the arrows; :data:`ALLOWED` is the same table, checked here by
reading every module's imports. A lazy import (inside a function) may reach further, and
each one that does is listed in :data:`LAZY`, so the exceptions are visible in one place.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_modellens"

#: Module -> the package modules it may import at module level (``tracer`` is the package).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "ids": set(),
    "trace": {"ids", "errors"},
    "canonical": {"ids", "errors", "trace", "gcpause"},
    "log": {"ids", "trace"},
    "changes": {"ids", "trace"},
    "match": {"ids", "trace", "changes"},
    "gcpause": set(),
    "differ": {"ids", "trace", "canonical", "changes", "match", "gcpause"},
    "picture": {"ids", "trace", "changes", "match", "gcpause"},
    "render": {"errors", "trace", "changes", "picture"},
    "files": {"errors"},
    "extension": {"errors", "trace", "canonical", "files"},
    "settings": {"trace", "picture"},
    "artifacts": {"errors", "trace", "changes", "settings", "files"},
    "causes": {"ids", "trace", "changes"},
    "report": {"ids", "errors", "changes", "causes"},
    "page": set(),
    "review": {"canonical", "errors", "files", "page", "trace"},
    "lifecycle": set(),
    "plugin": {"trace", "settings", "artifacts", "lifecycle"},
    "__main__": {"errors", "trace", "canonical"},
    "__init__": {"errors", "trace", "canonical", "changes"},
    "granularity": {"ids", "trace"},
    "tracer": {"ids", "errors", "trace", "granularity", "tracer", "gcpause"},
}
#: Module -> what it may import lazily, inside a function, beyond :data:`ALLOWED`.
LAZY: dict[str, set[str]] = {
    "trace": {"canonical", "log", "render", "differ", "extension", "changes"},  # the facade methods
    "render": {"differ"},  # only when no comparison is handed in
    "artifacts": {"render", "page"},
    "review": {"differ", "report", "render", "causes"},
    "plugin": {"tracer", "extension", "report", "differ", "errors", "artifacts", "canonical", "causes"},
    "__main__": {"differ", "report", "render", "review", "causes", "changes"},
    "__init__": {"tracer", "differ", "render"},
}
#: Third-party packages and the one module (or package) that may import each.
LIBRARY_HOMES = {"torch": "tracer", "syrupy": "extension", "deepdiff": "differ", "graphviz": "render"}


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return "tracer" if relative.parts[0] == "tracer" else path.stem


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> tuple[set[str], set[str], set[str]]:
    """(package modules at module level, package modules inside functions, third-party roots)."""
    tree = ast.parse(path.read_text())
    top, lazy, third = set(), set(), set()
    in_tracer = path.parent.name == "tracer"
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        inside_function = any(  # or under `if TYPE_CHECKING:`, the facade's return types
            (isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) or _is_type_checking(parent))
            and node in ast.walk(parent)
            for parent in ast.walk(tree)
        )
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level == 1 and in_tracer:  # from .recorder import ...: the tracer package itself
                names = {"tracer"}
            elif node.module:  # from .trace import ..., from ..trace import ...
                names = {node.module.split(".")[0]}
            else:  # from . import ids
                names = {alias.name for alias in node.names}
        else:
            roots = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            )
            names = set()
            for root in roots:
                if root.startswith("pytest_modellens"):
                    names.add(root.split(".")[1] if "." in root else "__init__")
                else:
                    third.add(root.split(".")[0])
        (lazy if inside_function else top).update(names)
    return top, lazy, third


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_arrows(path: Path) -> None:
    name = _module_name(path)
    importlib.import_module(
        "pytest_modellens"
        + (
            ""
            if path.stem == "__init__" and name != "tracer"
            else "." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        )
    )
    top, lazy, third = _imports(path)
    top.discard(name if name != "tracer" else "")
    assert top <= ALLOWED[name] | {name}, (
        f"{path.name} imports {sorted(top - ALLOWED[name])} against the arrows"
    )
    extra = lazy - ALLOWED[name] - {name}
    assert extra <= LAZY.get(name, set()), f"{path.name} imports {sorted(extra)} lazily, unlisted"
    for library, home in LIBRARY_HOMES.items():
        if library in third:
            assert name == home, f"{path.name} imports {library}, whose one home is {home}"


def test_the_arrows_have_no_cycle() -> None:
    seen: dict[str, int] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, f"import cycle: {' -> '.join((*stack, name))}"
        if seen.get(name):
            return
        for target in ALLOWED[name] - {name}:
            visit(target, (*stack, name))
        seen[name] = 1

    for name in ALLOWED:
        visit(name, ())


def test_no_module_parses_ids_by_hand() -> None:
    """Node ids and references are built and parsed in ids.py only."""
    by_hand = re.compile(
        r"""partition\(["'][:#/]["']\)|startswith\(\(?["'](param|buffer|const|input|output):|f["']\{[^}]+\}/\{"""
    )
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in MODULES
        if path.name != "ids.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_public_names_import_no_heavy_library() -> None:
    code = (
        "import sys, pytest_modellens as lens\n"
        "lens.Change, lens.ChangeKind, lens.Trace, lens.loads\n"
        "print(sorted(m for m in ('torch', 'deepdiff', 'syrupy', 'graphviz') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_package_ships_its_type_information() -> None:
    assert (PACKAGE / "py.typed").is_file()
