"""The Slicer export: the files of one atlas written into a folder the user chose, named by
:func:`~DiffDefAtlasLib.results.atlas_stem`, each atomically, never replacing files without asking.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import DiffDefInputError
from ..results import EXPORT_SUFFIXES
from .overlays import folding_from_jacobian

if TYPE_CHECKING:  # imageio pulls in the spatial package (torch); the module needs this file before torch exists
    from ..imageio import Volume


class ExportConflict(DiffDefInputError):
    """Files of the names an export would write exist already; ``paths`` lists them (the caller may ask the user)."""

    def __init__(self, paths: list[Path]):
        names = ", ".join(p.name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        super().__init__(f"{paths[0].parent}: {names} exist already; export again with overwrite to replace them")
        self.paths = list(paths)


def export_paths(folder: str | Path, stem: str) -> dict[str, Path]:
    """Where :func:`export_atlas` writes each item."""
    folder = Path(folder)
    return {key: folder / f"{stem}{suffix}" for key, suffix in EXPORT_SUFFIXES.items()}


def export_atlas(
    folder: str | Path,
    stem: str,
    *,
    atlas: Volume,
    labels: Volume | None = None,
    displacement: np.ndarray | None = None,
    grid=None,
    jacobian: Volume | None = None,
    summary: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the atlas, its labels, deformation (NIfTI intent 1006, RAS mm), Jacobian, folding and summary.

    Every file is written atomically; the folding map is det J <= 0 of the exported Jacobian. Returns the paths
    written, keyed as :data:`EXPORT_SUFFIXES`. The folder is the user's: a file of the same name already there is
    replaced only with ``overwrite`` (the Slicer module asks first); without it :class:`ExportConflict` lists them
    and nothing is written.

    Example:
        >>> export_atlas("out", "brain3d_age-72_sex-F_seed-0", atlas=volume)  # doctest: +SKIP
        {'atlas': PosixPath('out/brain3d_age-72_sex-F_seed-0_atlas.nii.gz')}
    """
    from ..atomic import write_text_atomic
    from ..imageio import Volume, write_image
    from ..fieldio import save_displacement_nifti

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DiffDefInputError(f"{folder}: expected a folder to export into, found a file")
    if displacement is not None and grid is None:
        raise ValueError("exporting a displacement needs its grid")
    paths = export_paths(folder, stem)
    wanted = {"atlas": True, "labels": labels is not None, "displacement": displacement is not None,
              "jacobian": jacobian is not None, "folding": jacobian is not None, "summary": summary is not None}
    existing = [paths[key] for key, used in wanted.items() if used and paths[key].exists()]
    if existing and not overwrite:
        raise ExportConflict(existing)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"atlas": write_image(atlas, paths["atlas"])}
    if labels is not None:
        written["labels"] = write_image(Volume(np.asarray(labels.array).astype(np.uint8), labels.affine), paths["labels"])
    if displacement is not None:
        written["displacement"] = save_displacement_nifti(np.asarray(displacement, dtype=np.float32), grid, paths["displacement"])
    if jacobian is not None:
        written["jacobian"] = write_image(Volume(np.asarray(jacobian.array, dtype=np.float32), jacobian.affine), paths["jacobian"])
        written["folding"] = write_image(Volume(folding_from_jacobian(jacobian.array), jacobian.affine), paths["folding"])
    if summary is not None:
        written["summary"] = write_text_atomic(paths["summary"], json.dumps(dict(summary), indent=2, default=str) + "\n")
    return written
