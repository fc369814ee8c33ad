"""Conversions between the library's convention (arrays indexed i, j, k with a RAS affine) and other conventions.

- ITK / SimpleITK / ANTs: LPS world coordinates, so the x and y axes (and vector components) change sign.
- NIfTI displacement vectors: 5D ``(I, J, K, 1, 3)`` with intent 1006 (``NIFTI_INTENT_DISPVECT``) hold RAS mm, the
  convention 3D Slicer reads. Files written by ITK/SimpleITK/ANTs have intent 1007 and hold LPS components.
- 3D Slicer arrays (``slicer.util.arrayFromVolume``, grid transforms): indexed ``[k, j, i]``; grid-transform
  vectors are RAS mm; the geometry is the IJK-to-RAS matrix.

This is the only module that knows about these conventions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DiffDefInputError
from .grid import Grid

NIFTI_INTENT_DISPVECT = 1006
NIFTI_INTENT_VECTOR = 1007


def _flip(ndim: int) -> np.ndarray:
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
    flip = _flip(n)
    linear = flip[:, None] * affine[:n, :n]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(n), atol=1e-4):
        raise DiffDefInputError("the image affine has shear; ITK formats need an orthogonal direction matrix")
    origin = flip * affine[:n, -1]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def itk_to_ras_affine(origin, spacing, direction) -> np.ndarray:
    """RAS voxel-to-world affine from ITK ``origin``, ``spacing`` and ``direction`` (LPS)."""
    n = len(origin)
    flip = _flip(n)
    linear = np.asarray(direction, dtype=np.float64).reshape(n, n) * np.asarray(spacing, dtype=np.float64)[None, :]
    affine = np.eye(n + 1)
    affine[:n, :n] = flip[:, None] * linear
    affine[:n, -1] = flip * np.asarray(origin, dtype=np.float64)
    return affine


def _check_field(u: np.ndarray, grid: Grid) -> np.ndarray:
    u = np.asarray(u)
    if u.shape != (grid.spatial_dims, *grid.shape):
        raise DiffDefInputError(f"expected a displacement of shape {(grid.spatial_dims, *grid.shape)}, found {u.shape}")
    return u


def displacement_to_sitk(u: np.ndarray, grid: Grid):
    """A SimpleITK vector image (float64, LPS components) holding the RAS field ``u`` ``(ndim, *shape)``.

    The result can be wrapped in ``sitk.DisplacementFieldTransform`` to resample with SimpleITK.
    """
    import SimpleITK as sitk

    u = _check_field(u, grid)
    n = grid.spatial_dims
    lps = _flip(n).reshape(n, *([1] * n)) * u
    # SimpleITK arrays are indexed [k, j, i, component].
    array = np.moveaxis(lps, 0, -1).transpose(*range(n - 1, -1, -1), n)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float64), isVector=True)
    origin, spacing, direction = ras_affine_to_itk(grid.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def displacement_from_sitk(image) -> tuple[np.ndarray, Grid]:
    """Inverse of :func:`displacement_to_sitk`: a RAS field ``(ndim, *shape)`` and its grid."""
    import SimpleITK as sitk

    n = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != n:
        raise DiffDefInputError(
            f"expected a {n}-component displacement field, found {image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # [k, j, i, c]
    array = array.transpose(*range(n - 1, -1, -1), n)
    u = np.moveaxis(array, -1, 0) * _flip(n).reshape(n, *([1] * n)).astype(np.float32)
    affine = itk_to_ras_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return np.ascontiguousarray(u), Grid(u.shape[1:], affine)


def _embed_2d_affine(affine: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


def save_displacement_nifti(u: np.ndarray, grid: Grid, path: str | Path) -> Path:
    """Write ``u`` as a NIfTI displacement field: intent 1006, RAS mm components, 5D ``(I, J, K, 1, C)``.

    2D fields are stored with a singleton third axis and 2 components. The file is written atomically.
    """
    import nibabel as nib

    from ..atomic import atomic_path

    u = _check_field(u, grid)
    n = grid.spatial_dims
    data = np.moveaxis(u.astype(np.float32), 0, -1)  # (I, J[, K], C)
    if n == 2:
        data = data[:, :, None, None, :]
        affine = _embed_2d_affine(grid.affine)
    else:
        data = data[:, :, :, None, :]
        affine = grid.affine
    image = nib.Nifti1Image(data, affine)
    image.header.set_intent(NIFTI_INTENT_DISPVECT, name="DISPVECT")
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def _load_nifti_field(path: Path) -> tuple[np.ndarray, Grid]:
    import nibabel as nib

    from ..imageio import check_size_limit

    image = nib.load(str(path))
    check_size_limit(path, image.shape)  # from the header, before any voxel is read
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 5 or data.shape[3] != 1 or data.shape[4] not in (2, 3):
        raise DiffDefInputError(f"{path}: expected a NIfTI displacement field of shape (I, J, K, 1, 3), found {data.shape}")
    components = data.shape[4]
    intent = int(image.header["intent_code"])
    if components == 2:
        if data.shape[2] != 1:
            raise DiffDefInputError(f"{path}: a 2-component field must have one slice, found shape {data.shape}")
        u = np.moveaxis(data[:, :, 0, 0, :], -1, 0)
        a = image.affine
        affine = np.array([[a[0, 0], a[0, 1], a[0, 3]], [a[1, 0], a[1, 1], a[1, 3]], [0, 0, 1]])
    else:
        u = np.moveaxis(data[:, :, :, 0, :], -1, 0)
        affine = image.affine
    if intent != NIFTI_INTENT_DISPVECT:
        # ITK, SimpleITK and ANTs write intent 1007 with LPS components.
        u = u * _flip(components).reshape(components, *([1] * components)).astype(np.float32)
    return np.ascontiguousarray(u), Grid(u.shape[1:], affine)


def load_displacement(path: str | Path) -> tuple[np.ndarray, Grid]:
    """Read a displacement field as a RAS field ``(ndim, *shape)`` and its grid.

    Accepts NIfTI (intent 1006 = RAS as written by this library and Slicer; otherwise ITK/ANTs LPS), any vector image
    SimpleITK reads (``.mha``, ``.nrrd``; LPS), and ITK transform files holding a displacement field (``.h5``, ``.tfm``).

    Example:
        >>> u, grid = load_displacement("displacement.nii.gz")  # doctest: +SKIP
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DiffDefInputError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(".gz"):
        from ..imageio import verify_gzip_stream

        verify_gzip_stream(path)
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _load_nifti_field(path)
        if name.endswith((".h5", ".hdf5", ".tfm", ".txt", ".mat")):
            transform = sitk.ReadTransform(str(path))
            while transform.GetName() == "CompositeTransform" and transform.GetNumberOfTransforms() == 1:
                transform = transform.GetNthTransform(0)
            if transform.GetName() != "DisplacementFieldTransform":
                raise DiffDefInputError(f"{path}: expected a displacement-field transform, found {transform.GetName()}")
            return displacement_from_sitk(sitk.DisplacementFieldTransform(transform).GetDisplacementField())
        return displacement_from_sitk(sitk.ReadImage(str(path)))
    except DiffDefInputError:
        raise
    except Exception as error:  # nibabel / SimpleITK raise many types for corrupt files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DiffDefInputError(f"{path}: cannot read a displacement field ({first_line})") from error


def displacement_to_slicer_array(u: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Slicer grid-transform form of a 3D field: an array ``[k, j, i, 3]`` of RAS mm vectors and the IJK-to-RAS matrix.

    This is what ``slicer.util.updateGridTransformFromArray`` expects, with the displacement grid's geometry set from
    the returned matrix.
    """
    u = _check_field(u, grid)
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
