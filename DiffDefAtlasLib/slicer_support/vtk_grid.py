"""A displacement field as the pieces of a Slicer grid transform, and back.

A ``vtkMRMLGridTransformNode`` holds a ``vtkOrientedGridTransform``: a ``vtkImageData`` of RAS displacement vectors
(mm) with the grid's origin and spacing, plus a separate 4x4 grid direction matrix for oblique grids. The Slicer
module builds that transform from :func:`displacement_grid_image` and reads it back with
:func:`displacement_from_grid_image`, so every conversion is here and tested with real VTK objects.

VTK is imported inside the functions (it ships with Slicer; the pure-Python library does not need it otherwise).

Example:
    >>> image, direction = displacement_grid_image(u, grid)  # doctest: +SKIP
    >>> transform = slicer.vtkOrientedGridTransform()  # doctest: +SKIP
    >>> transform.SetDisplacementGridData(image); transform.SetGridDirectionMatrix(direction)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DiffDefInputError
from .arrays import ImageGeometry, split_ijk_to_ras

if TYPE_CHECKING:
    from ..spatial import Grid


def matrix_to_vtk(matrix: np.ndarray) -> Any:
    """A ``vtkMatrix4x4`` holding a 4x4 numpy matrix (row-major, as ``slicer.util.vtkMatrixFromArray`` makes it)."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    values = np.asarray(matrix, dtype=np.float64)
    if values.shape != (4, 4):
        raise DiffDefInputError(f"expected a 4x4 matrix, found shape {values.shape}")
    result = vtkMatrix4x4()
    result.DeepCopy([float(v) for v in values.ravel()])
    return result


def matrix_from_vtk(matrix: Any) -> np.ndarray:
    """The 4x4 numpy matrix of a ``vtkMatrix4x4`` (inverse of :func:`matrix_to_vtk`)."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def displacement_grid_image(displacement: np.ndarray, grid: "Grid") -> tuple[Any, Any]:
    """``(vtkImageData, vtkMatrix4x4)`` for ``vtkOrientedGridTransform.SetDisplacementGridData`` /
    ``SetGridDirectionMatrix``.

    The image has the grid's dimensions, origin and spacing and 3-component double scalars: the RAS displacement
    (mm) at each grid point, in VTK point order (i fastest). The direction matrix holds the grid's unit axes.
    Placed in a Slicer grid transform node as the *FromParent* transform, it maps ``x`` to ``x + u(x)``.
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import VTK_DOUBLE
    from vtkmodules.vtkCommonDataModel import vtkImageData

    from ..spatial.convert import displacement_to_slicer_array

    array, ijk_to_ras = displacement_to_slicer_array(displacement, grid)  # [k, j, i, 3], RAS mm
    geometry = split_ijk_to_ras(ijk_to_ras)
    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.SetOrigin(*geometry.origin)
    image.SetSpacing(*geometry.spacing)
    vectors = numpy_support.numpy_to_vtk(np.ascontiguousarray(array, dtype=np.float64).reshape(-1, 3), deep=True,
                                         array_type=VTK_DOUBLE)
    vectors.SetName("displacement")
    image.GetPointData().SetScalars(vectors)
    return image, matrix_to_vtk(geometry.direction_matrix4())


def displacement_from_grid_image(image: Any, direction: Any | None = None) -> tuple[np.ndarray, "Grid"]:
    """Inverse of :func:`displacement_grid_image`: ``(u, grid)`` in the library's convention (a copy).

    ``direction`` is the transform's grid direction matrix (``GetGridDirectionMatrix()``); ``None`` means identity.
    """
    from vtkmodules.util import numpy_support

    from ..spatial.convert import displacement_from_slicer_array

    scalars = image.GetPointData().GetScalars()
    if scalars is None or scalars.GetNumberOfComponents() != 3:
        raise DiffDefInputError("the grid transform holds no 3-component displacement vectors")
    ni, nj, nk = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(scalars).reshape(nk, nj, ni, 3).astype(np.float32)
    directions = np.eye(3) if direction is None else matrix_from_vtk(direction)[:3, :3]
    geometry = ImageGeometry(tuple(image.GetOrigin()), tuple(image.GetSpacing()), directions)
    return displacement_from_slicer_array(array, geometry.ijk_to_ras())
