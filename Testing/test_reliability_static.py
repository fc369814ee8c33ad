"""Static safety checks of the shipped code (issue 8, item 2): weights are never unpickled, user paths never reach a
shell.

The checks read the syntax tree of every ``.py`` file in ``DiffDefAtlasLib/`` and the Slicer module ``DiffDefAtlas/``
(Python's own ``ast`` parser is the reference). Each rule is also run on a snippet that breaks it, so a rule that
can never fire is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "DiffDefAtlasLib", ROOT / "DiffDefAtlas"]

#: Modules whose loaders run arbitrary code from the data they read.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``Attribute(Name('torch'), 'load')``; ``""`` for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _is_text(node: ast.expr) -> bool:
    """A command given as one string (literal, f-string, concatenation, % or .format): it would need a shell."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_text(node.left) or _is_text(node.right)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def problems(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe construct in ``source``, as ``file:line: what``."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where}: imports {alias.name} (unpickling runs code)")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in UNSAFE_MODULES:
                found.append(f"{where}: imports from {node.module} (unpickling runs code)")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"{where}: 'from torch import load' hides torch.load from this check")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("torch.load",) and not _is_constant(_keyword(node, "weights_only"), True):
                found.append(f"{where}: torch.load without weights_only=True")
            elif name in ("torch.jit.load", "torch.hub.load", "torch.hub.load_state_dict_from_url"):
                found.append(f"{where}: {name} (runs code or downloads weights)")
            elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not None and not _is_constant(_keyword(node, "allow_pickle"), False):
                found.append(f"{where}: {name} with allow_pickle")
            elif name in ("os.system", "os.popen") or name.startswith("os.spawn"):
                found.append(f"{where}: {name} runs a shell command")
            elif name in ("eval", "exec"):
                found.append(f"{where}: {name}() of a string")
            elif name.startswith("subprocess."):
                shell = _keyword(node, "shell")
                if shell is not None and not _is_constant(shell, False):
                    found.append(f"{where}: {name} with shell=True")
                if node.args and _is_text(node.args[0]):
                    found.append(f"{where}: {name} with a command string (use a list of arguments)")
    return found


def _shipped_files() -> list[Path]:
    return sorted(p for folder in SHIPPED if folder.is_dir() for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_shipped_code_never_unpickles_or_uses_a_shell():
    """Reference: Python's ast of each shipped file; the list of unsafe constructs must be empty."""
    files = _shipped_files()
    assert len(files) > 20, "the scan found too few files"
    found = [p for path in files for p in problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == []


def test_loaders_in_use_are_safe_ones():
    """Reference: the weights loaders named in the design (safetensors, torch.load(weights_only=True)) are the ones
    the code actually calls, so the scan above looked at real loading code."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in _shipped_files())
    assert "safetensors" in text and "weights_only=True" in text


@pytest.mark.parametrize(
    "snippet, needle",
    [
        ("import pickle\npickle.load(open(p, 'rb'))", "imports pickle"),
        ("from joblib import load", "imports from joblib"),
        ("import torch\ntorch.load(path)", "without weights_only=True"),
        ("import torch\ntorch.load(path, weights_only=False)", "without weights_only=True"),
        ("from torch import load", "hides torch.load"),
        ("import numpy as np\nnp.load(path, allow_pickle=True)", "allow_pickle"),
        ("import numpy as np\nnp.load(path, allow_pickle=flag)", "allow_pickle"),
        ("import os\nos.system('ls ' + folder)", "os.system"),
        ("import subprocess\nsubprocess.run(['ls', folder], shell=True)", "shell=True"),
        ("import subprocess\nsubprocess.run(f'ls {folder}')", "command string"),
        ("import subprocess\nsubprocess.Popen('ls %s' % folder)", "command string"),
        ("eval(user_text)", "eval()"),
        ("import torch\ntorch.jit.load(path)", "torch.jit.load"),
    ],
)
def test_each_rule_fires_on_unsafe_code(snippet, needle):
    """Reference: snippets written to break one rule each."""
    found = problems(snippet)
    assert len(found) >= 1 and any(needle in f for f in found), found


def test_safe_code_passes():
    """Reference: the safe forms of the same operations."""
    snippet = (
        "import torch, numpy as np, subprocess\n"
        "torch.load(path, map_location='cpu', weights_only=True)\n"
        "np.load(path)\nnp.load(path, allow_pickle=False)\n"
        "subprocess.run([program, *arguments], check=True)\n"
        "from safetensors.torch import load_file\nload_file(path)\n"
    )
    assert problems(snippet) == []


def test_listing_models_does_not_import_monai():
    """Reference: ``sys.modules`` of a fresh interpreter. MONAI takes seconds to import; the image reader, the
    spatial core and ``diffdef-atlas models`` must not pull it in (only integration, training and losses do)."""
    import subprocess
    import sys

    code = (
        "import sys, io, contextlib\n"
        "import DiffDefAtlasLib.imageio, DiffDefAtlasLib.spatial\n"
        "from DiffDefAtlasLib.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['models']) == 0\n"
        "print(sorted(m for m in sys.modules if m == 'monai' or m.startswith('monai.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
