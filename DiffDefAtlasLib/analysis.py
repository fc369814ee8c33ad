"""Analysis of a displacement field: Jacobian determinant, folding and smoothness, as maps and a summary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import DiffDefInputError
from .imageio import Volume
from .spatial import Grid, folding_mask, jacobian_determinant, jacobian_summary
from .spatial.convert import check_field


@dataclass
class FieldAnalysis:
    """Jacobian-determinant map, folding mask (uint8, det J <= 0) and summary figures of one field."""

    jacobian: Volume
    folding: Volume
    summary: dict[str, float]


def analyze_field(displacement: np.ndarray, grid: Grid, mask: np.ndarray | None = None, *,
                  name: str = "displacement field") -> FieldAnalysis:
    """Jacobian determinant (physical units), folding mask and summary of a RAS field ``(ndim, *shape)``.

    ``mask`` (same shape as the grid) restricts the summary figures, not the maps. A field with NaN or infinite
    values is refused (:class:`~DiffDefAtlasLib.errors.DiffDefInputError`): its Jacobian would read as "no folding".
    ``name`` (the file it came from) begins each such message.

    Example:
        >>> g = Grid((8, 8, 8), np.eye(4))
        >>> analyze_field(np.zeros((3, 8, 8, 8)), g).summary["folding_ratio_nonpositive"]
        0.0
    """
    array = np.asarray(check_field(np.asarray(displacement), grid), dtype=np.float64)
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise DiffDefInputError(f"{name}: {bad} of {array.size} values are NaN or infinite; expected a finite field")
    if min(grid.shape) < 2:
        raise DiffDefInputError(
            f"{name}: a grid of {'x'.join(map(str, grid.shape))} voxels has no Jacobian;"
            " expected at least 2 voxels along every axis")
    u = torch.as_tensor(array)[None]
    jac = jacobian_determinant(u, grid)
    mask_t = None if mask is None else torch.as_tensor(np.asarray(mask) > 0)[None]
    summary = jacobian_summary(jac, grid, mask_t)
    jac_np = jac[0].numpy().astype(np.float32)
    folding = folding_mask(jac[0]).numpy().astype(np.uint8)
    return FieldAnalysis(Volume(jac_np, grid.affine), Volume(folding, grid.affine), summary)
