"""Jacobian determinant of a displacement field in physical units, folding and smoothness measures."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from .grid import Grid, is_diagonal


def _world_derivatives(displacement: torch.Tensor, grid: Grid) -> list[torch.Tensor] | None:
    """``[du/dx_c for c]`` (each ``(B, ndim, *shape)``) for an axis-aligned grid, or None for a rotated one.

    Central differences inside and one-sided ones at the edges (``torch.gradient``); on an axis-aligned grid the chain
    rule is one scale per axis, far cheaper than a general matrix product and without stacking nine volumes.
    """
    index_per_mm = np.linalg.inv(grid.linear)
    if not is_diagonal(index_per_mm):
        return None
    per_axis = torch.gradient(displacement, dim=list(range(2, 2 + grid.spatial_dims)))
    return [d.mul_(float(index_per_mm[b, b])) for b, d in enumerate(per_axis)]


def displacement_gradient(displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Spatial gradient ``du_a/dx_b`` in world (RAS mm) coordinates, shape ``(B, ndim, ndim, *shape)``.

    Derivatives along voxel axes use central differences inside and one-sided ones at the edges
    (``torch.gradient``), then the chain rule with the inverse of the grid's linear part handles any
    spacing, rotation or shear.
    """
    axis_aligned = _world_derivatives(displacement, grid)
    if axis_aligned is not None:
        return torch.stack(axis_aligned, dim=2)
    n = grid.spatial_dims
    du_dindex = torch.stack(torch.gradient(displacement, dim=list(range(2, 2 + n))), dim=2)  # (B, n_component, n_index, *shape)
    index_per_mm = np.linalg.inv(grid.linear)  # d index_b / d x_c
    return torch.einsum("bai...,ic->bac...", du_dindex, torch.as_tensor(index_per_mm, dtype=displacement.dtype, device=displacement.device))


def jacobian_determinant(displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``det(I + du/dx)`` for a field ``(B, ndim, *shape)`` in RAS mm; returns ``(B, *shape)``.

    Example:
        >>> g = Grid((10, 10, 10), np.diag([1.0, 2.0, 3.0, 1.0]))
        >>> x = torch.stack(torch.meshgrid(*[torch.arange(10.0)] * 3, indexing="ij"))
        >>> u = 0.1 * apply_matrix(g.linear, x[None])  # u(x) = 0.1 x: uniform scaling by 1.1
        >>> round(float(jacobian_determinant(u, g).mean()), 4)
        1.331
    """
    n = grid.spatial_dims
    columns = _world_derivatives(displacement, grid)  # columns[c][:, a] = du_a/dx_c
    if columns is None:
        g = displacement_gradient(displacement, grid)
        columns = [g[:, :, c] for c in range(n)]
    for c in range(n):
        columns[c][:, c] += 1.0  # J = I + du/dx

    def j(a: int, c: int) -> torch.Tensor:
        return columns[c][:, a]

    if n == 2:
        return j(0, 0) * j(1, 1) - j(0, 1) * j(1, 0)
    return (
        j(0, 0) * (j(1, 1) * j(2, 2) - j(1, 2) * j(2, 1))
        - j(0, 1) * (j(1, 0) * j(2, 2) - j(1, 2) * j(2, 0))
        + j(0, 2) * (j(1, 0) * j(2, 1) - j(1, 1) * j(2, 0))
    )


def folding_mask(jacobian: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """Voxels where the map folds: ``det J <= 0`` (default) or ``det J < 0`` with ``strict=True``."""
    return jacobian < 0 if strict else jacobian <= 0


def folding_ratio(jacobian: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Share of voxels (inside ``mask`` if given) with ``det J <= 0`` and with ``det J < 0``.

    Example:
        >>> folding_ratio(torch.tensor([1.0, 0.0, -1.0, 2.0]))
        {'nonpositive': 0.5, 'negative': 0.25}
    """
    values = jacobian if mask is None else jacobian[mask.bool().expand_as(jacobian)]
    count = max(values.numel(), 1)
    return {
        "nonpositive": float((values <= 0).sum()) / count,
        "negative": float((values < 0).sum()) / count,
    }


def jacobian_smoothness(jacobian: torch.Tensor, grid: Grid, mask: torch.Tensor | None = None) -> float:
    """Mean magnitude of the spatial gradient of ``det J`` (per mm): lower is smoother.

    ``jacobian`` is ``(B, *shape)`` or ``(*shape)``; the mean runs over all voxels (inside ``mask`` if given).
    """
    jac = jacobian if jacobian.dim() == grid.spatial_dims + 1 else jacobian.unsqueeze(0)
    columns = _world_derivatives(jac.unsqueeze(1), grid)
    if columns is None:
        grad = displacement_gradient(jac.unsqueeze(1), grid)[:, 0]
        columns = [grad[:, c : c + 1] for c in range(grid.spatial_dims)]
    magnitude = torch.sqrt(cast(torch.Tensor, sum(d[:, 0] * d[:, 0] for d in columns)))  # (B, *shape)
    if mask is not None:
        magnitude = magnitude[mask.bool().expand_as(magnitude)]
    return float(magnitude.mean())


def log_jacobian_std(jacobian: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Standard deviation of ``log det J`` over positive voxels (inside ``mask``): a regularity measure."""
    values = jacobian if mask is None else jacobian[mask.bool().expand_as(jacobian)]
    values = values[values > 0]
    return float(torch.log(values).std()) if values.numel() > 1 else 0.0


def jacobian_summary(jacobian: torch.Tensor, grid: Grid, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Folding ratios, smoothness, std of log det J and det J min/median/max, as plain floats for ``summary.json``."""
    values = jacobian if mask is None else jacobian[mask.bool().expand_as(jacobian)]
    ratios = folding_ratio(jacobian, mask)
    return {
        "folding_ratio_nonpositive": ratios["nonpositive"],
        "folding_ratio_negative": ratios["negative"],
        "folding_voxels_nonpositive": int((values <= 0).sum()),
        "smoothness_mean_abs_grad_detj_per_mm": jacobian_smoothness(jacobian, grid, mask),
        "log_detj_std": log_jacobian_std(jacobian, mask),
        "detj_min": float(values.min()),
        "detj_median": float(values.median()),
        "detj_max": float(values.max()),
        "voxels": int(values.numel()),
    }
