"""Quality measures of a conditional atlas: overlap, regularity, centrality, sharpness, volumes, ground-truth error.

Every measure takes plain arrays or tensors on a :class:`~DiffDefAtlasLib.spatial.Grid` (RAS mm) and returns floats,
so the same code scores every method (the baselines and Diff-Def) on the same footing. The Jacobian measures reuse
:mod:`DiffDefAtlasLib.spatial`; Dice, volumes and endpoint error come from :mod:`DiffDefAtlasLib.metrics`.

Example:
    >>> g = Grid((8, 8), np.eye(3))
    >>> regularity(torch.zeros(1, 2, 8, 8), g)["folding_nonpositive"]
    0.0
"""

from __future__ import annotations

from typing import Mapping, Sequence, cast

import numpy as np
import torch

from ..metrics import dice_per_label, endpoint_error, label_volumes
from ..spatial import Grid, compose_displacements, folding_ratio, jacobian_determinant, jacobian_smoothness, vector_length

__all__ = [
    "centrality",
    "dice_per_label",
    "endpoint_error",
    "exact_neighbourhood_mean_displacement",
    "label_volumes",
    "regularity",
    "sharpness",
    "trend_slope",
    "trend_slope_interval",
    "volume_errors",
    "weighted_mean_displacement",
]


def _mask_tensor(mask: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    return torch.as_tensor(np.asarray(mask) > 0 if not isinstance(mask, torch.Tensor) else mask > 0)


def regularity(displacement: torch.Tensor, grid: Grid, mask: np.ndarray | torch.Tensor | None = None) -> dict[str, float]:
    """Folding ratios (``det J <= 0`` and ``det J < 0``) and smoothness (mean ``|grad det J|`` per mm) of a field.

    ``displacement`` is ``(1, ndim, *grid.shape)`` in RAS mm; ``mask`` (``grid.shape``) restricts the figures.

    Example:
        >>> g = Grid((8, 8), np.eye(3))
        >>> u = torch.zeros(1, 2, 8, 8); u[0, 0] = -2.0 * torch.arange(8.0)[:, None]  # x -> -x: folds everywhere
        >>> regularity(u, g)["folding_negative"]
        1.0
    """
    jac = jacobian_determinant(displacement.double(), grid)
    m = _mask_tensor(mask)
    m = None if m is None else m[None]
    ratios = folding_ratio(jac, m)
    return {
        "folding_nonpositive": ratios["nonpositive"],
        "folding_negative": ratios["negative"],
        "smoothness_grad_detj": jacobian_smoothness(jac, grid, m),
    }


def sharpness(image: np.ndarray | torch.Tensor, grid: Grid, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean gradient magnitude of an image (intensity per mm) inside ``mask``: a blurry average scores lower.

    The gradient is the one :func:`~DiffDefAtlasLib.spatial.jacobian_smoothness` takes of det J (central differences,
    world units), applied to the intensities.

    Example:
        >>> g = Grid((6, 6), np.diag([2.0, 2.0, 1.0]))
        >>> ramp = np.tile(3.0 * 2.0 * np.arange(6.0)[:, None], (1, 6))  # 3 per mm along x
        >>> round(sharpness(ramp, g), 6)
        3.0
    """
    tensor = torch.as_tensor(np.asarray(image, dtype=np.float64))
    m = _mask_tensor(mask)
    return jacobian_smoothness(tensor, grid, None if m is None else m[None])


def weighted_mean_displacement(displacements: torch.Tensor, weights: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """``sum_i w_i d_i / sum_i w_i`` of fields ``(N, ndim, *shape)``; returns ``(ndim, *shape)``."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=displacements.dtype, device=displacements.device)
    if w.numel() != displacements.shape[0] or float(w.sum()) <= 0:
        raise ValueError(f"expected {displacements.shape[0]} non-negative weights with a positive sum, found {w.tolist()}")
    w = w / w.sum()
    return (w.view(-1, *([1] * (displacements.dim() - 1))) * displacements).sum(0)


def centrality(mean_displacement: torch.Tensor, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean norm (mm) of the weighted mean displacement ``(ndim, *shape)`` of a neighbourhood registered to an atlas.

    Zero for an atlas at the centre of its neighbourhood (the Diff-Def morphology-preservation criterion).

    Example:
        >>> d = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), -1.0)])
        >>> centrality(weighted_mean_displacement(d, [1, 1]))
        0.0
    """
    norm = vector_length(mean_displacement.double())
    m = _mask_tensor(mask)
    return float(norm[m].mean() if m is not None else norm.mean())


def exact_neighbourhood_mean_displacement(atlas_displacement: torch.Tensor, neighbour_inverse_mean: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Weighted mean displacement of neighbours registered to an atlas, when their deformations are known exactly.

    With ``atlas = T o phi_a`` and ``subject_i = T o phi_i``, the exact registration of subject ``i`` (moving) to the
    atlas (fixed) is ``phi_i^-1 o phi_a``, with displacement ``d_i(x) = u_a(x) + w_i(x + u_a(x))`` (``w_i`` the
    displacement of ``phi_i^-1``). This is linear in ``w_i``, so the weighted mean over ``i`` is the composition with the
    weighted mean ``neighbour_inverse_mean = sum_i w_i w_i / sum w``. Fields are ``(1, ndim, *shape)``; returns
    ``(ndim, *shape)``.
    """
    return compose_displacements(neighbour_inverse_mean, atlas_displacement, grid)[0]


def volume_errors(volumes: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Relative error ``|v - v_ref| / v_ref`` for each name present in both (NaN where the reference is 0).

    Example:
        >>> volume_errors({"csf": 11.0, "gm": 5.0}, {"csf": 10.0})
        {'csf': 0.1}
    """
    out = {}
    for name, ref in reference.items():
        if name in volumes:
            out[name] = abs(float(volumes[name]) - float(ref)) / float(ref) if ref else float("nan")
    return {k: round(v, 12) for k, v in out.items()}


def trend_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` (e.g. ventricle volume per year of age).

    Example:
        >>> trend_slope([1, 2, 3], [2, 4, 6])
        2.0
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        return float("nan")
    return round(float(np.polyfit(x[keep], y[keep], 1)[0]), 12)


def trend_slope_interval(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Least-squares slope of ``y`` on ``x`` with its normal-approximation interval ``slope +/- z * SE``.

    ``SE`` is the ordinary least-squares standard error of the slope (residual variance over ``n - 2``); ``z = 1.96``
    gives the usual 95 % interval. It tells whether an atlas's trend is consistent with a trend measured on few
    subjects. Returns ``(slope, low, high)``; NaNs with fewer than 3 usable points.

    Example:
        >>> slope, low, high = trend_slope_interval([1, 2, 3, 4], [2.1, 3.9, 6.0, 8.0])
        >>> round(slope, 2), low < slope < high
        (1.98, True)
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = cast(np.ndarray, x[keep]), cast(np.ndarray, y[keep])
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    se = float(np.sqrt(residual @ residual / (len(x) - 2) / np.sum((x - x.mean()) ** 2)))
    return float(slope), float(slope - z * se), float(slope + z * se)

