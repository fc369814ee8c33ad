"""Smooth random and analytic fields shared by the spatial tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from DiffDefAtlasLib.spatial import Grid


def smooth_random_field(shape, amplitude_mm: float, sigma_vox: float = 4.0, seed: int = 0) -> np.ndarray:
    """A smooth random field ``(ndim, *shape)`` whose largest component reaches ``amplitude_mm``."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    u = np.stack([gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="reflect") for _ in range(ndim)])
    return (u * (amplitude_mm / np.abs(u).max())).astype(np.float64)


def world_points(grid: Grid) -> np.ndarray:
    """World coordinates ``(ndim, *shape)`` of every grid point."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), axis=-1).astype(np.float64)
    return np.moveaxis(grid.voxel_to_world_points(idx), -1, 0)


def linear_field(grid: Grid, matrix: np.ndarray, centre=None) -> np.ndarray:
    """u(x) = A (x - c): its Jacobian determinant is exactly det(I + A) everywhere."""
    x = world_points(grid)
    c = np.zeros(grid.spatial_dims) if centre is None else np.asarray(centre)
    x = x - c.reshape(-1, *([1] * grid.spatial_dims))
    return np.einsum("ij,j...->i...", matrix, x)


def rotation_affine(shape, spacing, angle: float, origin=None) -> np.ndarray:
    """A 3D affine with a rotation about a tilted axis, anisotropic spacing, and a given origin."""
    axis = np.array([0.3, -0.5, 0.8])
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin if origin is not None else -affine[:3, :3] @ (np.asarray(shape) / 2.0)
    return affine


def t(x: np.ndarray) -> torch.Tensor:
    """numpy ``(C, *shape)`` to a float64 batch tensor ``(1, C, *shape)``."""
    return torch.as_tensor(np.asarray(x, dtype=np.float64))[None]
