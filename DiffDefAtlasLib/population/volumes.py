"""Tissue and ventricle volumes (mL) of the template warped by a deformation: warp the labels, count the voxels."""

from __future__ import annotations

import numpy as np
import torch

from ..imageio import Volume
from ..metrics import label_volumes
from ..spatial import Grid, resample_displacement, warp_labels
from ..template import LABEL_NAMES

#: Volume keys reported for a warped template (label names except background).
VOLUME_NAMES: tuple[str, ...] = tuple(name for value, name in sorted(LABEL_NAMES.items()) if value != 0)


def warped_label_volumes_ml(displacement: torch.Tensor, grid: Grid, labels: Volume) -> list[dict[str, float]]:
    """Volumes in mL of each template label after warping ``labels`` by ``displacement`` ``(B, ndim, *grid.shape)``.

    The labels are warped (nearest neighbour) onto their own grid; the field is resampled there first when its grid
    differs. Returns one dictionary per batch item with the keys of :data:`VOLUME_NAMES` plus
    ``"total_csf"`` (CSF + lateral ventricles).

    Example:
        >>> t = load_template("2mm")  # doctest: +SKIP
        >>> warped_label_volumes_ml(torch.zeros(1, 3, 80, 96, 80), t.grid, t.labels)[0]["lateral_ventricles"]  # doctest: +SKIP
        16.704
    """
    target = labels.grid
    if grid != target:
        displacement = resample_displacement(displacement, grid, target)
    label_tensor = torch.from_numpy(np.asarray(labels.array).astype(np.int64))[None, None]
    warped = warp_labels(label_tensor, displacement.to(torch.float64), target, moving_grid=target)
    out = []
    for item in warped:
        volumes = label_volumes(item.numpy(), target, LABEL_NAMES)
        volumes["total_csf"] = volumes["csf"] + volumes["lateral_ventricles"]
        out.append(volumes)
    return out
