"""The bundled MNI ICBM152 2009a symmetric template: T1, brain mask, tissue probabilities and labels.

Two resolutions are shipped (``Resources/template/``, built by ``scripts/build_template.py``):

- ``"1mm"``: display grid, 159x191x159 voxels;
- ``"2mm"``: working grid, 80x96x80 voxels (every size divides by 16), the same field of view.

Both grids are axis-aligned RAS with voxel centres x -79..79, y -112..78, z -72..86 mm; every 2 mm voxel
centre is also a 1 mm voxel centre. ``template.json`` beside the images describes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..checksum import verify_sha256
from ..errors import DiffDefInputError
from ..imageio import Volume, read_image
from ..resources import resource_path
from ..spatial.grid import Grid
from .labels import TISSUE_CLASSES

RESOLUTIONS: tuple[str, ...] = ("1mm", "2mm")
_INTEGER_MAPS = ("brain_mask", "labels")
#: The notices that go with every copy of the template images (the MNI licence requires its copyright notice "in
#: all copies"): exported file name -> file of ``Resources/template/``. ``LICENSE`` is the MNI copyright and
#: permission notice; ``NOTICE.txt`` repeats it with the provenance of the derived maps and the references.
NOTICE_FILES: Mapping[str, str] = MappingProxyType({"LICENSE_MNI_ICBM152.txt": "LICENSE", "NOTICE.txt": "NOTICE.txt"})


@dataclass(frozen=True)
class Template:
    """The template at one resolution. Arrays are read-only (shared by every caller); copy them to modify.

    Attributes:
        resolution: ``"1mm"`` or ``"2mm"``.
        t1: T1-weighted intensities in [0, 1] (float32).
        brain_mask: 1 inside the brain, 0 outside (uint8).
        labels: 0 background, 1 CSF, 2 GM, 3 WM, 4 lateral ventricles (uint8); see ``LABEL_NAMES``.
        tissue: ``{"csf", "gm", "wm"}`` probabilities in [0, 1] (float32) that sum to 1 inside the mask.

    Example:
        >>> template = load_template("2mm")
        >>> template.labels.array.shape, template.tissue["gm"].array.dtype
        ((80, 96, 80), dtype('float32'))
    """

    resolution: str
    t1: Volume
    brain_mask: Volume
    labels: Volume
    tissue: Mapping[str, Volume]

    @property
    def grid(self) -> Grid:
        """The sampling grid shared by all maps."""
        return self.t1.grid


@lru_cache(maxsize=1)
def _info_text() -> str:
    return resource_path("template", "template.json").read_text(encoding="utf-8")


def template_info() -> dict:
    """The parsed ``template.json``: source, grids, file names, label names and volumes (a fresh copy).

    Example:
        >>> template_info()["resolutions"]["2mm"]["shape"]
        [80, 96, 80]
    """
    return json.loads(_info_text())


def template_notices() -> dict[str, str]:
    """The texts to write beside exported copies of the template: exported file name -> text (``NOTICE_FILES``).

    Example:
        >>> "Copyright (C) 1993-2009 Louis Collins" in template_notices()["LICENSE_MNI_ICBM152.txt"]
        True
    """
    return {name: resource_path("template", source).read_text(encoding="utf-8") for name, source in NOTICE_FILES.items()}


def _check_resolution(resolution: str) -> str:
    if resolution not in RESOLUTIONS:
        raise DiffDefInputError(f"template resolution: expected one of {', '.join(RESOLUTIONS)}, found {resolution!r}")
    return resolution


@lru_cache(maxsize=None)
def _read_only_arrays(resolution: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every map of one resolution once, after checking its sha256 against ``template.json``; arrays and
    affines are made read-only."""
    info = template_info()["resolutions"][resolution]
    arrays = {}
    for name, filename in info["files"].items():
        path = verify_sha256(resource_path("template", filename), info.get("sha256", {}).get(filename), "template file")
        if name in _INTEGER_MAPS:
            volume = read_image(path, dtype=np.uint8)
        else:
            volume = read_image(path, dtype=np.float32)
            # uint8 * float32(1/255) can round a hair above 1.
            np.clip(volume.array, 0.0, 1.0, out=volume.array)
        volume.array.setflags(write=False)
        volume.affine.setflags(write=False)
        arrays[name] = (volume.array, volume.affine)
    return arrays


def load_template(resolution: str = "2mm") -> Template:
    """Load the bundled MNI ICBM152 2009a template at ``"2mm"`` (working grid) or ``"1mm"`` (display).

    Files are read once per process; each call returns new :class:`Volume` objects that share read-only arrays.

    Example:
        >>> template = load_template()
        >>> template.grid == working_grid()
        True
    """
    arrays = _read_only_arrays(_check_resolution(resolution))
    return Template(
        resolution=resolution,
        t1=Volume(*arrays["t1"]),
        brain_mask=Volume(*arrays["brain_mask"]),
        labels=Volume(*arrays["labels"]),
        tissue=MappingProxyType({name: Volume(*arrays[name]) for name in TISSUE_CLASSES}),
    )


def template_grid(resolution: str = "2mm") -> Grid:
    """The grid of the template at ``resolution``, from ``template.json`` (no image is read).

    Example:
        >>> template_grid("1mm").shape
        (159, 191, 159)
    """
    entry = template_info()["resolutions"][_check_resolution(resolution)]
    return Grid(tuple(entry["shape"]), np.array(entry["affine"], dtype=np.float64))


def working_grid() -> Grid:
    """The 2 mm working grid (80x96x80, RAS, axis-aligned): the grid fields and atlases are generated on.

    Example:
        >>> working_grid().spacing
        (2.0, 2.0, 2.0)
    """
    return template_grid("2mm")
