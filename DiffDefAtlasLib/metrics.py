"""Measures on label maps and fields, one home: Dice, label volumes and endpoint error.

Example:
    >>> dice_per_label(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))["mean"]
    0.6666666666666666
"""

from __future__ import annotations

from typing import Mapping, TYPE_CHECKING

import numpy as np

from .errors import DiffDefInputError
from .spatial.grid import Grid

if TYPE_CHECKING:
    import torch


def dice_per_class(a: np.ndarray, b: np.ndarray, classes: tuple[int, ...] = (1, 2, 3, 4)) -> dict[int, float]:
    """Dice overlap per class between two label arrays of the same shape (NaN where a class is in neither).

    Example:
        >>> dice_per_class(np.array([1, 1, 2]), np.array([1, 2, 2]), classes=(1, 2))
        {1: 0.6666666666666666, 2: 0.6666666666666666}
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise DiffDefInputError(f"Dice needs label arrays of the same shape, found {a.shape} and {b.shape}")
    out = {}
    for c in classes:
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        out[c] = 2.0 * int(np.logical_and(x, y).sum()) / total if total else float("nan")
    return out


def dice_per_label(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice per non-zero label present in either map, plus their mean (``"mean"``).

    Example:
        >>> dice_per_label(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))["mean"]
        0.6666666666666666
    """
    ids = sorted(int(i) for i in np.union1d(np.unique(a), np.unique(b)) if i != 0)
    scores = dice_per_class(a, b, classes=tuple(ids)) if ids else {}
    out = {str(k): float(v) for k, v in scores.items()}
    out["mean"] = float(np.nanmean(list(scores.values()))) if scores else float("nan")
    return out


def label_volumes(labels: np.ndarray, grid: Grid, names: Mapping[int, str], decimals: int | None = None) -> dict[str, float]:
    """Volume of each named label (background excluded): mL in 3D, mm^2 in 2D, from voxel counts and the voxel size;
    rounded to ``decimals`` when given.

    Example:
        >>> label_volumes(np.array([[0, 1], [1, 1]]), Grid((2, 2), np.diag([2.0, 2.0, 1.0])), {1: "csf"})
        {'csf': 12.0}
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=max(names, default=0) + 1)
    scale = grid.voxel_volume / (1000.0 if grid.spatial_dims == 3 else 1.0)
    volumes = {name: float(counts[value]) * scale for value, name in names.items() if value != 0}
    return volumes if decimals is None else {name: round(value, decimals) for name, value in volumes.items()}


def endpoint_error(displacement: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean and 95th percentile of ``|u - u_true|`` (mm) over the voxels of ``mask``; fields are ``(ndim, *shape)``.

    Example:
        >>> round(endpoint_error(np.ones((3, 2, 2, 2)), np.zeros((3, 2, 2, 2)))["mean"] ** 2, 9)
        3.0
    """
    error = np.linalg.norm(np.asarray(displacement, dtype=np.float64) - np.asarray(truth, dtype=np.float64), axis=0)
    values = error[np.asarray(mask) > 0] if mask is not None else error.ravel()
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95))}
