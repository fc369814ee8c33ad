"""Sampling grids in physical space: a shape plus an affine from voxel index to RAS millimetres."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DiffDefInputError


def is_diagonal(matrix: np.ndarray) -> bool:
    """True when every off-diagonal entry of ``matrix`` is exactly 0 (an axis-aligned linear part).

    Example:
        >>> is_diagonal(np.diag([1.0, 2.0])), is_diagonal(np.array([[1.0, 1e-9], [0.0, 1.0]]))
        (True, False)
    """
    matrix = np.asarray(matrix)
    return bool(np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0)


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular grid: ``shape`` (i, j[, k]) and an ``affine`` from voxel index to RAS mm.

    The affine is (ndim+1)x(ndim+1): 4x4 in 3D, 3x3 in 2D. Voxel centres sit at integer indices.

    Example:
        >>> g = Grid((80, 96, 80), np.diag([2.0, 2.0, 2.0, 1.0]))
        >>> g.spacing
        (2.0, 2.0, 2.0)
    """

    shape: tuple[int, ...]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        affine = np.array(self.affine, dtype=np.float64)
        ndim = len(shape)
        if ndim not in (2, 3):
            raise DiffDefInputError(f"grid must be 2D or 3D, found {ndim}D shape {shape}")
        if min(shape) < 1:
            raise DiffDefInputError(f"grid shape must be positive, found {shape}")
        if affine.shape != (ndim + 1, ndim + 1):
            raise DiffDefInputError(f"a {ndim}D grid needs a {ndim + 1}x{ndim + 1} affine, found {affine.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:ndim, :ndim])) < 1e-12:
            raise DiffDefInputError(f"grid affine must be finite and invertible (spacing > 0), found\n{affine}")
        affine.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self.shape == other.shape and np.allclose(self.affine, other.affine, atol=1e-6)

    def __hash__(self) -> int:
        return hash((self.shape, tuple(np.round(self.affine, 6).ravel())))

    def __repr__(self) -> str:
        return f"Grid(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, origin={tuple(round(o, 3) for o in self.origin)})"

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.shape)

    @property
    def linear(self) -> np.ndarray:
        """The linear part of the affine (direction times spacing)."""
        return self.affine[: self.spatial_dims, : self.spatial_dims]

    @property
    def origin(self) -> tuple[float, ...]:
        """World position (RAS mm) of voxel index 0."""
        return tuple(float(v) for v in self.affine[: self.spatial_dims, -1])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each index axis."""
        return tuple(float(v) for v in np.linalg.norm(self.linear, axis=0))

    @property
    def world_to_voxel(self) -> np.ndarray:
        """Inverse affine: RAS mm to voxel index."""
        return np.linalg.inv(self.affine)

    @property
    def voxel_volume(self) -> float:
        """Volume (3D, mm^3) or area (2D, mm^2) of one voxel."""
        return float(abs(np.linalg.det(self.linear)))

    def voxel_to_world_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map points ``(..., ndim)`` from voxel indices to RAS mm."""
        return ijk @ self.linear.T + self.affine[: self.spatial_dims, -1]

    def world_to_voxel_points(self, xyz: np.ndarray) -> np.ndarray:
        """Map points ``(..., ndim)`` from RAS mm to (fractional) voxel indices."""
        inv = self.world_to_voxel
        n = self.spatial_dims
        return xyz @ inv[:n, :n].T + inv[:n, -1]

    def resized(self, shape: Sequence[int]) -> "Grid":
        """A grid with ``shape`` covering the same field of view (voxel edges kept in place).

        Example:
            >>> Grid((80, 96, 80), np.diag([2.0, 2.0, 2.0, 1.0])).resized((40, 48, 40)).spacing
            (4.0, 4.0, 4.0)
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise ValueError(f"expected {self.spatial_dims} sizes, found {shape}")
        scale = np.array(self.shape, dtype=np.float64) / np.array(shape, dtype=np.float64)
        n = self.spatial_dims
        affine = np.eye(n + 1)
        affine[:n, :n] = self.linear * scale[None, :]
        # The first new voxel centre sits half a new voxel inside the old field-of-view edge.
        affine[:n, -1] = self.voxel_to_world_points((scale - 1.0) / 2.0)
        return Grid(shape, affine)

    def zoomed(self, factor: float) -> "Grid":
        """A grid with spacing multiplied by ``factor`` over the same field of view (shape divided by it)."""
        shape = tuple(max(1, int(round(s / factor))) for s in self.shape)
        return self.resized(shape)
