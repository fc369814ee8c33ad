"""Arrays and geometry between the library and 3D Slicer: a ``Volume`` (``[i, j, k]``) to and from the ``[k, j, i]``
array and IJK-to-RAS matrix of a volume node; origin, spacing and directions of an image; displacement magnitude.

Only numpy at file scope: the module imports this before torch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DiffDefInputError

if TYPE_CHECKING:  # imageio pulls in the spatial package (torch); the module needs this file before torch exists
    from ..imageio import Volume


def volume_to_slicer_array(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """A 3D volume as Slicer stores it: a C-contiguous ``[k, j, i]`` array and the 4x4 IJK-to-RAS matrix.

    Pass both to ``slicer.util.addVolumeFromArray(array, ijk_to_ras)`` or ``updateVolumeFromArray`` plus
    ``SetIJKToRASMatrix``.

    Example:
        >>> from DiffDefAtlasLib.imageio import Volume
        >>> array, ijk_to_ras = volume_to_slicer_array(Volume(np.zeros((4, 5, 6), np.float32), np.eye(4)))
        >>> array.shape
        (6, 5, 4)
    """
    array = np.asarray(volume.array)
    affine = np.asarray(volume.affine, dtype=np.float64)
    if affine.shape != (4, 4) or array.ndim != 3:
        raise DiffDefInputError(f"Slicer volumes are 3D: expected an [i, j, k] array with a 4x4 affine, found {array.shape}")
    array = np.ascontiguousarray(array.transpose(2, 1, 0))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:  # Slicer refuses "long long" voxels
        array = array.astype(np.int32)
    return array, affine.copy()


def volume_from_slicer_array(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> Volume:
    """Inverse of :func:`volume_to_slicer_array`: ``slicer.util.arrayFromVolume(node)`` and the node's IJK-to-RAS.

    The voxels are copied, so the result stays valid when the node changes.

    Example:
        >>> volume_from_slicer_array(np.zeros((6, 5, 4)), np.eye(4)).array.shape
        (4, 5, 6)
    """
    array = np.asarray(array_kji)
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise DiffDefInputError(f"expected a 4x4 IJK-to-RAS matrix, found shape {matrix.shape}")
    if array.ndim != 3:
        raise DiffDefInputError(f"expected a scalar Slicer volume array [k, j, i], found shape {array.shape}")
    from ..imageio import Volume

    return Volume(np.array(array.transpose(2, 1, 0), copy=True), matrix.copy())


@dataclass(frozen=True)
class ImageGeometry:
    """``vtkImageData``-style geometry: voxel (0,0,0) at ``origin``, step ``spacing[a]`` along ``directions[:, a]``."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    directions: np.ndarray = field(repr=False)

    def ijk_to_ras(self) -> np.ndarray:
        """Recompose the 4x4 IJK-to-RAS matrix."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.directions * np.asarray(self.spacing)[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    def direction_matrix4(self) -> np.ndarray:
        """The directions as a 4x4 matrix (``vtkOrientedGridTransform.SetGridDirectionMatrix`` takes this)."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.directions
        return matrix


def split_ijk_to_ras(ijk_to_ras: np.ndarray) -> ImageGeometry:
    """Split an IJK-to-RAS matrix into origin, spacing and unit axis directions.

    A displacement grid (``vtkImageData``) carries origin and spacing; its axis directions go to
    ``vtkOrientedGridTransform.SetGridDirectionMatrix``.

    Example:
        >>> split_ijk_to_ras(np.diag([-2.0, 2.0, 3.0, 1.0])).spacing
        (2.0, 2.0, 3.0)
    """
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise DiffDefInputError(f"expected a 4x4 IJK-to-RAS matrix, found shape {matrix.shape}")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(matrix)):
        raise DiffDefInputError(f"IJK-to-RAS matrix must be finite with non-zero spacing, found\n{matrix}")
    directions = matrix[:3, :3] / spacing[None, :]
    if not np.allclose(directions.T @ directions, np.eye(3), atol=1e-4):
        raise DiffDefInputError("IJK-to-RAS matrix has shear; Slicer image grids need orthogonal axes")
    return ImageGeometry(tuple(matrix[:3, 3].tolist()), tuple(spacing.tolist()), directions)


def displacement_magnitude(displacement: np.ndarray) -> np.ndarray:
    """Length (mm) of each displacement vector of a field ``(ndim, *shape)``; float32 ``shape``.

    Example:
        >>> float(displacement_magnitude(np.array([[[3.0]], [[4.0]]]))[0, 0])
        5.0
    """
    u = np.asarray(displacement, dtype=np.float32)
    return np.sqrt(np.sum(u * u, axis=0))
