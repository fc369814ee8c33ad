"""Resource lookup from a source checkout, a pip-installed layout and an explicit override."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import DiffDefAtlasLib
from DiffDefAtlasLib.resources import resources_dir

REPO = Path(DiffDefAtlasLib.__file__).resolve().parent.parent


def _lookup(pythonpath: Path, env_extra: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DIFFDEF_ATLAS_RESOURCES"}
    env["PYTHONPATH"] = str(pythonpath)
    env.update(env_extra or {})
    code = "from DiffDefAtlasLib.resources import resources_dir; print(resources_dir())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=pythonpath, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_source_checkout_finds_top_level_resources():
    """Reference: the repository's own Resources/ folder."""
    assert (resources_dir() / "template" / "template.json").is_file()


def test_pip_layout_and_override(tmp_path):
    """Reference: the wheel layout (Resources/ installed as DiffDefAtlasLib/_resources), and DIFFDEF_ATLAS_RESOURCES."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "DiffDefAtlasLib", site / "DiffDefAtlasLib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Resources" / "template", site / "DiffDefAtlasLib" / "_resources" / "template")
    assert Path(_lookup(site)) == site / "DiffDefAtlasLib" / "_resources"
    other = tmp_path / "custom"
    shutil.copytree(REPO / "Resources" / "template", other / "template")
    assert Path(_lookup(site, {"DIFFDEF_ATLAS_RESOURCES": str(other)})) == other
