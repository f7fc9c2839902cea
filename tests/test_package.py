"""The package surface: public names, import cost, and the CLI shell."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import mil_crcrs
from cli.main import COMMANDS, cli


def test_every_public_name_resolves():
    for name in mil_crcrs.__all__:
        assert getattr(mil_crcrs, name) is not None, name


def test_importing_the_package_leaves_torch_for_first_use():
    code = "import sys, mil_crcrs; print('torch' in sys.modules, 'sksurv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        mil_crcrs.no_such_name  # noqa: B018


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mil_crcrs", "feature_extraction", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that the import statement ``node`` in ``module`` runs."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        targets = [resolve(alias.name) for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the package of ``module``
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".rstrip(".")
        # ``from pkg import mod`` runs pkg and pkg.mod; ``from pkg import name`` runs pkg
        targets = [resolve(base)] + [
            f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules
        ]
    return {t for t in targets if t is not None and t != module}


def import_graph() -> dict[str, set[str]]:
    """Which of our modules each of our modules imports: every ``import`` statement, at module
    level, inside a function (an import deferred to dodge a cycle is still a cycle) or under
    ``if TYPE_CHECKING:`` (a cycle for whoever reads the types)."""
    files = {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[module] |= _imported(node, module, is_package, modules)
    return graph


def test_the_import_graph_is_built_from_every_kind_of_import():
    graph = import_graph()
    assert "mil_crcrs.train.settings" in graph["mil_crcrs.train.crossval"]  # module level
    assert "mil_crcrs.fitting" in graph["cli.fit"]  # function level
    assert "mil_crcrs.models" in graph["mil_crcrs.ensemble"]  # ``from pkg import name``


def test_no_import_cycles():
    graph = import_graph()
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(reversed(exc.args[1]))}")


def _folder(module: str) -> str:
    """The folder ``module`` lives in: its package, or itself for a package. A module at the top
    of a package (``mil_crcrs.errors``, ``mil_crcrs.ensemble``) is its own node: the top folder
    holds the shared modules every folder uses, not a stage."""
    is_package = (ROOT / module.replace(".", "/")).is_dir()
    folder = module if is_package else module.rpartition(".")[0]
    return folder if "." in folder else module


def folder_graph() -> dict[str, set[str]]:
    """Which folders (sub-packages such as ``mil_crcrs.train`` or
    ``feature_extraction.reading``) import which, from :func:`import_graph`."""
    graph: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        edges = graph.setdefault(_folder(module), set())
        edges |= {_folder(m) for m in imported} - {_folder(module)}
    return graph


def test_the_folder_graph_joins_a_folders_modules():
    graph = folder_graph()
    assert "feature_extraction.reading" in graph["feature_extraction.running"]
    assert "mil_crcrs.train" in graph["mil_crcrs.fitting"]
    assert "mil_crcrs.stats.report.build" not in graph


def test_no_import_cycles_between_folders():
    try:
        tuple(graphlib.TopologicalSorter(folder_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle between folders: {' -> '.join(reversed(exc.args[1]))}")


#: The sizes a reader can hold in mind: a module, and a function (its body, after decorators).
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_no_module_over_400_lines_and_no_function_over_80():
    too_long = []
    for path in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}: {node.name}() {length} lines")
    assert not too_long, too_long
