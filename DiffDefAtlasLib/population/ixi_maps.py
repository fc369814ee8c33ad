"""IXI tissue maps (FSL FAST segmentations or one partial-volume map) on the template's 2 mm working grid.

The IXI maps sit on FSL's MNI152 1 mm grid (182x218x182, LAS). Every working-grid point (odd RAS millimetres) is a
voxel centre of that grid, so a 2 mm voxel is the average of the 1 mm voxels under it: the maps are filtered with
``[1/4, 1/2, 1/4]`` along each axis (the 2 mm box over 1 mm voxels) and then sampled at the working-grid points with
:func:`~DiffDefAtlasLib.spatial.warp_image` (identity field, ``moving_grid`` = the IXI grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import convolve1d

from ..data.ixi import IxiSubject, load_ixi_segmentation
from ..errors import DiffDefInputError
from ..imageio import Volume, read_image
from ..spatial import Grid, warp_image
from ..template import TISSUE_CLASSES, load_template, working_grid

#: Map kind -> tissue channels it provides (names of :data:`~DiffDefAtlasLib.template.TISSUE_CLASSES`).
KIND_CHANNELS: dict[str, tuple[str, ...]] = {"seg": TISSUE_CLASSES, "pve_gm": ("gm",), "pve_wm": ("wm",)}
_BOX_1MM_TO_2MM = np.array([0.25, 0.5, 0.25])


@dataclass
class SubjectMaps:
    """Tissue fractions of one subject on the working grid: ``maps`` ``(1, C, *shape)`` for ``channels``."""

    subject_id: str
    kind: str
    channels: tuple[str, ...]
    maps: torch.Tensor


def map_kind(subject: IxiSubject) -> str:
    """The map used for a subject: its FAST segmentation when present, else its GM or WM partial-volume map."""
    for kind in KIND_CHANNELS:
        if kind in subject.files:
            return kind
    raise DiffDefInputError(f"IXI subject {subject.subject_id}: no segmentation or PVE map (files: {sorted(subject.files)})")


def resample_to_working_grid(channels: np.ndarray, source: Grid, grid: Grid | None = None) -> torch.Tensor:
    """Average 1 mm maps ``(C, *source.shape)`` onto the 2 mm ``grid`` (default: the working grid): ``(1, C, *grid.shape)``.

    Example:
        >>> maps = resample_to_working_grid(np.ones((1, 182, 218, 182)), ixi_grid)  # doctest: +SKIP
    """
    grid = working_grid() if grid is None else grid
    smoothed = np.asarray(channels, dtype=np.float32)
    for axis in range(1, smoothed.ndim):
        smoothed = convolve1d(smoothed, _BOX_1MM_TO_2MM, axis=axis, mode="constant")
    image = torch.from_numpy(np.ascontiguousarray(smoothed))[None]
    identity = torch.zeros(1, grid.spatial_dims, *grid.shape)
    return warp_image(image, identity, grid, moving_grid=source)


def load_subject_maps(subject: IxiSubject, grid: Grid | None = None) -> SubjectMaps:
    """The subject's tissue fractions on the working grid (3 channels from a segmentation, 1 from a PVE map)."""
    kind = map_kind(subject)
    if kind == "seg":
        seg = load_ixi_segmentation(subject)
        channels = np.stack([(seg.array == label).astype(np.float32) for label in (1, 2, 3)])
        source = seg.grid
    else:
        pve: Volume = read_image(subject.files[kind])
        channels = np.clip(pve.array, 0.0, 1.0)[None]
        source = pve.grid
    maps = resample_to_working_grid(channels, source, grid)
    return SubjectMaps(subject.subject_id, kind, KIND_CHANNELS[kind], maps)


def template_tissue_maps(channels: tuple[str, ...] = TISSUE_CLASSES) -> torch.Tensor:
    """The template's tissue probabilities on the working grid, ``(1, C, 80, 96, 80)`` float32.

    Example:
        >>> template_tissue_maps(("gm",)).shape  # doctest: +SKIP
        torch.Size([1, 1, 80, 96, 80])
    """
    template = load_template("2mm")
    return torch.from_numpy(np.stack([template.tissue[name].array for name in channels]).astype(np.float32))[None]


def template_correlation(maps: SubjectMaps) -> float:
    """Pearson correlation of a subject's maps with the template's probabilities of the same classes (quality check).

    Correctly normalised IXI maps score 0.59-0.78; maps stored upside down or far from MNI space score below 0.55.
    """
    template = template_tissue_maps(maps.channels).numpy().ravel()
    return float(np.corrcoef(maps.maps.numpy().ravel(), template)[0, 1])
