"""The library's import structure: the layers contract of pyproject.toml holds, no module imports itself through a
circle of others, and the contract does catch a cycle added on purpose.

Reference: grimp's import graph (the graph import-linter checks), which counts function-local imports too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="import-linter is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's pyproject.toml, run from ``cwd`` (whose DiffDefAtlasLib it checks)."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": ""})


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module: each is a circle of imports."""
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in edges:
        if module not in index:
            visit(module)
    return found


def test_the_layers_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_module_imports_itself_through_others():
    """Zero file circles, function-local imports included (a package cycle would also break the layers)."""
    graph = grimp.build_graph("DiffDefAtlasLib", include_external_packages=False)
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    "target, line, report",
    [
        # a lower layer importing a higher one, closing a circle generate -> template -> generate
        ("template/labels.py", "from ..generate import atlas", "DiffDefAtlasLib.template.labels -> DiffDefAtlasLib.generate.atlas"),
        # the library reaching for Slicer (even inside a function)
        ("slicer_support/overlays.py", "import slicer", "DiffDefAtlasLib.slicer_support.overlays -> slicer"),
    ],
)
def test_a_violation_added_on_purpose_breaks_a_contract(tmp_path, target, line, report):
    """Control for the contract test: a copy of the library with one bad import added breaks a contract, and the
    report names the offending import."""
    shutil.copytree(ROOT / "DiffDefAtlasLib", tmp_path / "DiffDefAtlasLib", ignore=shutil.ignore_patterns("__pycache__", "Resources"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "DiffDefAtlasLib" / target
    path.write_text(path.read_text() + f"\n\ndef _added_on_purpose():\n    {line}  # noqa: F401\n")
    result = _lint(tmp_path)
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout[-2000:]
    assert report in result.stdout
