"""The layers of the package, read from its source: the engine (``anomaly``) never imports the page's side
(``anomaly.ui``), and no two modules import each other, directly or round a longer circle.

Every ``import`` counts, at module level or inside a function: a function-level import is how a circle hides
(``anomaly.bench`` once imported ``anomaly.ui.bench`` inside ``run_benchmark``, which imported
``anomaly.ui.launcher``, which imported ``anomaly.bench``). The files are parsed, not imported, so the test
needs no model and no TensorFlow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import anomaly

PACKAGE_ROOT = Path(anomaly.__file__).resolve().parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root`` (a package called ``package``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """The package's own modules that ``name`` imports anywhere in its file, with the line of each import.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``.
    """
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import anomaly.ui.views`` names the module; ``import a.b`` of a non-module falls back a level.
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                found.append((target, node.lineno))
    return found


def import_graph(root: Path, package: str) -> dict[str, list[tuple[str, int]]]:
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, list[tuple[str, int]]], lower: str, upper: str) -> list[str]:
    """Imports of ``upper`` (or a module in it) from a module of ``lower`` outside ``upper``."""

    def inside(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    return [
        f"{name}:{line} imports {target}"
        for name, edges in sorted(graph.items())
        if inside(name, lower) and not inside(name, upper)
        for target, line in edges
        if inside(target, upper)
    ]


def circles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The import circles: each strongly connected group of modules (Tarjan), as one path round it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # the package is a few dozen modules: recursion depth is no concern
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [path_round(graph, group) for group in groups]


def path_round(graph: dict[str, list[tuple[str, int]]], group: list[str]) -> list[str]:
    """One circle inside a strongly connected group, ``a:line -> b:line -> ... -> a``, for the message."""
    members = set(group)
    start = group[0]
    path, seen, node = [], set(), start
    while node not in seen:
        seen.add(node)
        target, line = next((t, ln) for t, ln in graph[node] if t in members)
        path.append(f"{node}:{line}")
        node = target
    # the walk may enter the circle after a lead-in: keep the circle itself
    first = next(i for i, step in enumerate(path) if step.rsplit(":", 1)[0] == node)
    return [*path[first:], node]


def test_engine_never_imports_the_page() -> None:
    wrong = upward_imports(import_graph(PACKAGE_ROOT, "anomaly"), "anomaly", "anomaly.ui")
    assert not wrong, "the engine imports the page's side:\n" + "\n".join(wrong)


def test_no_import_circles() -> None:
    found = circles(import_graph(PACKAGE_ROOT, "anomaly"))
    assert not found, "import circles (one path round each group of modules that import each other):\n" + (
        "\n".join(" -> ".join(c) for c in found)
    )


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walk_finds_a_circle_closed_inside_a_function(tmp_path: Path) -> None:
    # The shape of the circle the issue found: engine -> ui.bench -> ui.launcher -> engine, the first
    # step inside a function and written as ``from package import module``.
    root = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "bench.py": "import os\n\ndef run():\n    from pkg.ui import bench\n    return bench\n",
            "ui/__init__.py": "",
            "ui/bench.py": "from .launcher import start\n",
            "ui/launcher.py": "from pkg.bench import run as start\n",
            "other.py": "import pkg.bench\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.bench"] == [("pkg.ui.bench", 4)]
    assert graph["pkg.ui.bench"] == [("pkg.ui.launcher", 1)]
    assert circles(graph) == [["pkg.bench:4", "pkg.ui.bench:1", "pkg.ui.launcher:1", "pkg.bench"]]
    assert upward_imports(graph, "pkg", "pkg.ui") == ["pkg.bench:4 imports pkg.ui.bench"]


def test_the_walk_passes_a_package_that_imports_downward_only(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "features.py": "import numpy\n",
            "detector.py": "from pkg import features\nfrom . import features as again\n",
            "ui/__init__.py": "",
            "ui/views.py": "from ..detector import Detector\nfrom pkg.features import x\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.ui.views"] == [("pkg.detector", 1), ("pkg.features", 2)]
    assert graph["pkg.detector"] == [("pkg.features", 1), ("pkg.features", 2)]
    assert circles(graph) == []
    assert upward_imports(graph, "pkg", "pkg.ui") == []


@pytest.mark.parametrize("name", ["anomaly.detector", "anomaly.ui.views"])
def test_the_walk_sees_the_real_package(name: str) -> None:
    # A walk that found nothing would pass the two layer tests above for the wrong reason.
    graph = import_graph(PACKAGE_ROOT, "anomaly")
    assert name in graph and graph[name], f"no imports found in {name}"


MAX_MODULE_LINES = 450
# Issue 18 exempts the synthesiser (one generator of many faults, read top to bottom).
LONG_MODULES = {"anomaly/synth.py": "the synthesiser"}


def module_lines() -> dict[str, int]:
    root = PACKAGE_ROOT.parent
    return {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
    }


def test_no_module_over_450_lines() -> None:
    long = {
        name: n for name, n in module_lines().items() if n > MAX_MODULE_LINES and name not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"
