"""Conversions between the library's convention (arrays indexed i, j, k with a RAS affine) and other conventions.

- ITK / SimpleITK / ANTs: LPS world coordinates, so the x and y axes (and vector components) change sign.
- NIfTI displacement vectors: 5D ``(I, J, K, 1, 3)`` with intent 1006 (``NIFTI_INTENT_DISPVECT``) hold RAS mm, the
  convention 3D Slicer reads. Files written by ITK/SimpleITK/ANTs have intent 1007 and hold LPS components.
- 3D Slicer arrays (``slicer.util.arrayFromVolume``, grid transforms): indexed ``[k, j, i]``; grid-transform
  vectors are RAS mm; the geometry is the IJK-to-RAS matrix.

This is the only module that knows about these conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DiffDefInputError
from .grid import Grid

if TYPE_CHECKING:
    import SimpleITK as sitk

NIFTI_INTENT_DISPVECT = 1006
NIFTI_INTENT_VECTOR = 1007


def lps_flip(ndim: int) -> np.ndarray:
    """Sign flip between RAS and LPS for the first two world axes."""
    flip = np.ones(ndim)
    flip[:2] = -1.0
    return flip


def ras_affine_to_itk(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Split a RAS voxel-to-world affine into ITK ``(origin, spacing, direction)`` in LPS.

    Raises :class:`DiffDefInputError` for a sheared affine, which ITK cannot represent.
    """
    affine = np.asarray(affine, dtype=np.float64)
    n = affine.shape[0] - 1
    flip = lps_flip(n)
    linear = flip[:, None] * affine[:n, :n]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(n), atol=1e-4):
        raise DiffDefInputError("the image affine has shear; ITK formats need an orthogonal direction matrix")
    origin = flip * affine[:n, -1]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def itk_to_ras_affine(origin: Sequence[float] | np.ndarray, spacing: Sequence[float] | np.ndarray, direction: Sequence[float] | np.ndarray) -> np.ndarray:
    """RAS voxel-to-world affine from ITK ``origin``, ``spacing`` and ``direction`` (LPS)."""
    n = len(origin)
    flip = lps_flip(n)
    linear = np.asarray(direction, dtype=np.float64).reshape(n, n) * np.asarray(spacing, dtype=np.float64)[None, :]
    affine = np.eye(n + 1)
    affine[:n, :n] = flip[:, None] * linear
    affine[:n, -1] = flip * np.asarray(origin, dtype=np.float64)
    return affine


def check_field(u: np.ndarray, grid: Grid) -> np.ndarray:
    u = np.asarray(u)
    if u.shape != (grid.spatial_dims, *grid.shape):
        raise DiffDefInputError(f"expected a displacement of shape {(grid.spatial_dims, *grid.shape)}, found {u.shape}")
    return u


def displacement_to_sitk(u: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK vector image (float64, LPS components) holding the RAS field ``u`` ``(ndim, *shape)``.

    The result can be wrapped in ``sitk.DisplacementFieldTransform`` to resample with SimpleITK.
    """
    import SimpleITK as sitk

    u = check_field(u, grid)
    n = grid.spatial_dims
    lps = lps_flip(n).reshape(n, *([1] * n)) * u
    # SimpleITK arrays are indexed [k, j, i, component].
    array = np.moveaxis(lps, 0, -1).transpose(*range(n - 1, -1, -1), n)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float64), isVector=True)
    origin, spacing, direction = ras_affine_to_itk(grid.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def displacement_from_sitk(image: sitk.Image) -> tuple[np.ndarray, Grid]:
    """Inverse of :func:`displacement_to_sitk`: a RAS field ``(ndim, *shape)`` and its grid."""
    import SimpleITK as sitk

    n = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != n:
        raise DiffDefInputError(
            f"expected a {n}-component displacement field, found {image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # [k, j, i, c]
    array = array.transpose(*range(n - 1, -1, -1), n)
    u = np.moveaxis(array, -1, 0) * lps_flip(n).reshape(n, *([1] * n)).astype(np.float32)
    affine = itk_to_ras_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return np.ascontiguousarray(u), Grid(u.shape[1:], affine)


def embed_2d_affine(affine: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


def displacement_to_slicer_array(u: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Slicer grid-transform form of a 3D field: an array ``[k, j, i, 3]`` of RAS mm vectors and the IJK-to-RAS matrix.

    This is what ``slicer.util.updateGridTransformFromArray`` expects, with the displacement grid's geometry set from
    the returned matrix.
    """
    u = check_field(u, grid)
    if grid.spatial_dims != 3:
        raise DiffDefInputError("Slicer grid transforms are 3D; found a 2D field")
    array = np.ascontiguousarray(np.moveaxis(u, 0, -1).transpose(2, 1, 0, 3))
    return array, grid.affine.copy()


def displacement_from_slicer_array(array: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[np.ndarray, Grid]:
    """Inverse of :func:`displacement_to_slicer_array`."""
    array = np.asarray(array)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DiffDefInputError(f"expected a Slicer grid-transform array [k, j, i, 3], found shape {array.shape}")
    u = np.ascontiguousarray(np.moveaxis(array.transpose(2, 1, 0, 3), -1, 0))
    return u, Grid(u.shape[1:], np.asarray(ijk_to_ras, dtype=np.float64))
