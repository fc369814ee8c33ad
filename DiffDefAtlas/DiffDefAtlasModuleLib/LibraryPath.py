"""Make ``DiffDefAtlasLib`` importable from the module (standard library only: it runs before anything else)."""

import logging
import sys
from pathlib import Path
from typing import Optional


def findLibraryParent(moduleFolder) -> Optional[Path]:
    """The folder holding ``DiffDefAtlasLib/__init__.py``: the module folder itself in an installed extension
    (the library is installed beside the module), or its parent in a source checkout; ``None`` when neither has it."""
    here = Path(moduleFolder).resolve()
    for folder in (here, here.parent):
        if (folder / "DiffDefAtlasLib" / "__init__.py").is_file():
            return folder
    return None


def addLibraryToPath(moduleFolder) -> Path:
    """Put the folder found by :func:`findLibraryParent` first on ``sys.path`` (once) and return it.

    Without the library the module cannot work; the error is logged and the module folder returned, so Slicer still
    lists the module and the import error that follows names the problem.
    """
    folder = findLibraryParent(moduleFolder)
    if folder is None:
        here = Path(moduleFolder).resolve()
        logging.error(f"DiffDefAtlasLib not found in {here} or {here.parent}; reinstall the DiffDefAtlas extension")
        return here
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder
