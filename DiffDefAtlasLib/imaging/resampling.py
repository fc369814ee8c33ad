"""Images on grids: the working grid for a fixed image, affine displacements and resampling (linear or nearest)."""

from __future__ import annotations

import numpy as np
import torch

from ..imageio import Volume
from ..spatial import Grid, warp_image, warp_labels


def working_grid_for(fixed: Grid, spacing_mm: float, multiple: int) -> Grid:
    """The network's grid for a fixed image: ``fixed`` itself when it already has ``spacing_mm`` voxels and sizes that
    are multiples of ``multiple``; otherwise a grid with the same orientation and centre, ``spacing_mm`` voxels and
    sizes rounded up to ``multiple`` (covering at least the fixed field of view).

    Example:
        >>> g = Grid((159, 191, 159), np.diag([1.0, 1.0, 1.0, 1.0]))
        >>> working_grid_for(g, 2.0, 16).shape
        (80, 96, 80)
    """
    spacing = np.asarray(fixed.spacing)
    shape = np.asarray(fixed.shape)
    if np.allclose(spacing, spacing_mm, rtol=0.01) and not np.any(shape % multiple):
        return fixed
    n = fixed.spatial_dims
    extent = shape * spacing
    new_shape = np.maximum(np.ceil(extent / spacing_mm / multiple - 1e-6).astype(int), 1) * multiple
    direction = fixed.linear / spacing[None, :]
    centre = fixed.voxel_to_world_points((shape - 1) / 2.0)
    affine = np.eye(n + 1)
    affine[:n, :n] = direction * spacing_mm
    affine[:n, n] = centre - affine[:n, :n] @ ((new_shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in new_shape), affine)


def world_points(grid: Grid, dtype=torch.float32, device=None) -> torch.Tensor:
    """RAS coordinates ``(1, ndim, *shape)`` of every point of ``grid`` (built axis by axis: cheap for big grids)."""
    n = grid.spatial_dims
    linear = np.array(grid.linear)
    out = torch.zeros((1, n, *grid.shape), dtype=dtype, device=device)
    for d in range(n):
        out[0, d] = float(grid.affine[d, n])
        for axis in range(n):
            if linear[d, axis] != 0.0:
                shape = [1] * n
                shape[axis] = grid.shape[axis]
                out[0, d] += (torch.arange(grid.shape[axis], dtype=dtype, device=device) * float(linear[d, axis])).view(shape)
    return out


def _apply_affine(matrix: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """``A p`` for points ``(1, ndim, *shape)`` and an (ndim+1)x(ndim+1) matrix, component by component."""
    n = points.shape[1]
    out = torch.empty_like(points)
    for d in range(n):
        out[:, d] = float(matrix[d, n])
        for e in range(n):
            if matrix[d, e] != 0.0:
                out[:, d] += float(matrix[d, e]) * points[:, e]
    return out


def affine_displacement(matrix: np.ndarray, grid: Grid, dtype=torch.float32, device=None) -> torch.Tensor:
    """The displacement ``A x - x`` ``(1, ndim, *shape)`` in RAS mm of the affine map ``x -> A x`` on ``grid``.

    Example:
        >>> m = np.eye(3); m[0, 2] = 5.0
        >>> float(affine_displacement(m, Grid((4, 4), np.eye(3)))[0, 0].mean())
        5.0
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = grid.spatial_dims
    x = world_points(grid, dtype, device)
    shifted = matrix.copy()
    shifted[:n, :n] -= np.eye(n)  # (A - I) x + t: no cancellation between large coordinates
    return _apply_affine(shifted, x)


def compose_with_affine(matrix: np.ndarray, displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Displacement of ``x -> A (x + u(x))``: the deformable field ``u`` followed by the affine ``A`` (fixed -> moving)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = grid.spatial_dims
    linear_only = np.eye(n + 1)
    linear_only[:n, :n] = matrix[:n, :n]
    # A(x + u) - x = (A x - x) + L u
    return affine_displacement(matrix, grid, displacement.dtype, displacement.device) + _apply_affine(linear_only, displacement)


def to_tensor(volume: Volume, device=None, dtype=torch.float32) -> torch.Tensor:
    """A volume's array as a ``(1, 1, *shape)`` tensor (one copy at most: layout, type and writeability at once)."""
    array = np.asarray(volume.array)
    wanted = torch.empty((), dtype=dtype).numpy().dtype
    if not (array.flags.c_contiguous and array.flags.writeable and array.dtype == wanted):  # template arrays are read-only
        array = np.array(array, dtype=wanted, order="C")
    return torch.from_numpy(array).to(device)[None, None]


def resample(volume: Volume, grid: Grid, matrix: np.ndarray | None = None, *, labels: bool = False, device=None) -> torch.Tensor:
    """Sample ``volume`` at ``A x`` for every point ``x`` of ``grid`` (``A`` = identity by default): ``(1, 1, *shape)``.

    Linear interpolation for images (float32), nearest for ``labels`` (int64).
    """
    if not labels:
        return resample_image(to_tensor(volume, device), volume.grid, grid, matrix)
    values = torch.as_tensor(np.asarray(volume.array).astype(np.int64), device=device)[None, None]
    if _is_identity(matrix, grid) and volume.grid == grid:
        return values
    displacement = affine_displacement(np.eye(grid.spatial_dims + 1) if matrix is None else matrix, grid, torch.float64, device)
    return warp_labels(values, displacement, grid, volume.grid)


def resample_image(image: torch.Tensor, image_grid: Grid, grid: Grid, matrix: np.ndarray | None = None) -> torch.Tensor:
    """:func:`resample` for an image already held as a ``(1, 1, *shape)`` tensor on ``image_grid`` (linear)."""
    if _is_identity(matrix, grid) and image_grid == grid:
        return image  # same grid, no transform: sampling at the voxel centres returns the voxels themselves
    displacement = affine_displacement(np.eye(grid.spatial_dims + 1) if matrix is None else matrix, grid, torch.float32, image.device)
    return warp_image(image, displacement, grid, image_grid)


def _is_identity(matrix: np.ndarray | None, grid: Grid) -> bool:
    return matrix is None or np.array_equal(matrix, np.eye(grid.spatial_dims + 1))
