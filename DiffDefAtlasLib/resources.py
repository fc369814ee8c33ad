"""Locate run-time resources (template, model weights) and the optional shared data.

Resources are found, in order:

1. the folder named by the environment variable ``DIFFDEF_ATLAS_RESOURCES``;
2. ``Resources/`` next to ``DiffDefAtlasLib/`` (a source checkout, or Slicer run from source);
3. ``DiffDefAtlasLib/Resources/`` (the layout of an installed Slicer extension);
4. ``DiffDefAtlasLib/_resources/``, where ``pip install`` puts the ``Resources/`` folder.

The shared research data (never part of the project) is looked up in
``DIFFDEF_ATLAS_DATA`` or ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates() -> list[Path]:
    found: list[Path] = []
    env = os.environ.get("DIFFDEF_ATLAS_RESOURCES")
    if env:
        found.append(Path(env))
    found.append(_PACKAGE_DIR.parent / "Resources")
    found.append(_PACKAGE_DIR / "Resources")
    found.append(_PACKAGE_DIR / "_resources")
    return found


@lru_cache(maxsize=None)
def resources_dir() -> Path:
    """Return the folder that holds the bundled template and models.

    Example:
        >>> (resources_dir() / "template").is_dir()
        True
    """
    for candidate in _candidates():
        if (candidate / "template").is_dir():
            return candidate
    searched = ", ".join(str(c) for c in _candidates())
    raise FileNotFoundError(f"DiffDefAtlas resources not found (searched: {searched}); reinstall the package")


def resource_path(*parts: str) -> Path:
    """Path of a bundled resource, e.g. ``resource_path("template", "mni_t1_1mm.nii.gz")``."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"bundled resource missing: {path}")
    return path


def _shared_data_candidates() -> list[Path]:
    env = os.environ.get("DIFFDEF_ATLAS_DATA")
    return ([Path(env)] if env else []) + [_PACKAGE_DIR.parent.parent / "shared" / "data"]


def shared_data_dir() -> Path | None:
    """Folder of the shared research data (``../shared/data``), or ``None`` when absent."""
    for candidate in _shared_data_candidates():
        if (candidate / "README.md").is_file():
            return candidate
    return None


def missing_data_message(what: str, expected: str, data_dir: str | Path | None = None) -> str:
    """One line saying which data was not found, where it was looked for, and how to point at it.

    Example:
        >>> missing_data_message("IXI data", "ixi_3d/subjects.csv", "/nowhere")
        'IXI data not found: expected /nowhere/ixi_3d/subjects.csv (pass the data folder, or set DIFFDEF_ATLAS_DATA)'
    """
    if data_dir is not None:
        searched = [Path(data_dir)]
    else:
        found = shared_data_dir()
        searched = [found] if found is not None else _shared_data_candidates()
    places = " or ".join(str(folder / expected) for folder in searched)
    return f"{what} not found: expected {places} (pass the data folder, or set DIFFDEF_ATLAS_DATA)"
