"""Displacement-field files: NIfTI vector fields (intent 1006, RAS mm), ITK/ANTs fields (LPS) and ITK transform files.

The conventions themselves live in :mod:`DiffDefAtlasLib.spatial.convert`; this module reads and writes files.
"""

from __future__ import annotations

from pathlib import Path

from typing import cast

import numpy as np

from .atomic import atomic_path
from .errors import DiffDefInputError
from .imageio import MAX_IMAGE_GB_ENV, check_size_limit, default_max_bytes, format_bytes, verify_gzip_stream
from .spatial.convert import NIFTI_INTENT_DISPVECT, check_field, displacement_from_sitk, embed_2d_affine, lps_flip
from .spatial.grid import Grid


def save_displacement_nifti(u: np.ndarray, grid: Grid, path: str | Path) -> Path:
    """Write ``u`` as a NIfTI displacement field: intent 1006, RAS mm components, 5D ``(I, J, K, 1, C)``.

    2D fields are stored with a singleton third axis and 2 components. The file is written atomically.
    """
    import nibabel as nib

    u = check_field(u, grid)
    n = grid.spatial_dims
    data = np.moveaxis(u.astype(np.float32), 0, -1)  # (I, J[, K], C)
    if n == 2:
        data = data[:, :, None, None, :]
        affine = embed_2d_affine(grid.affine)
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


def save_displacement_itk(u: np.ndarray, grid: Grid, path: str | Path) -> Path:
    """Write the RAS field ``u`` as an ITK displacement image (LPS components, float32, compressed), atomically.

    float32 holds a displacement in mm to 1e-7 relative precision, and halves the file against ITK's float64.
    """
    import SimpleITK as sitk

    from .spatial.convert import displacement_to_sitk

    image = sitk.Cast(displacement_to_sitk(u, grid), sitk.sitkVectorFloat32)
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def _load_nifti_field(path: Path) -> tuple[np.ndarray, Grid]:
    import nibabel as nib

    image = cast("nib.Nifti1Image", nib.load(str(path)))
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
        u = u * lps_flip(components).reshape(components, *([1] * components)).astype(np.float32)
    return np.ascontiguousarray(u), Grid(u.shape[1:], affine)


def check_transform_file_size(path: Path, max_bytes: int | None = None) -> None:
    """Refuse an ITK transform file larger than the image-size limit (:func:`~.imageio.default_max_bytes`)."""
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    size = path.stat().st_size
    if size > limit:
        raise DiffDefInputError(f"{path}: a transform file of {format_bytes(size)} is larger than the {format_bytes(limit)}"
                                f" allowed (set {MAX_IMAGE_GB_ENV} to change the limit)")


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
        verify_gzip_stream(path)
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _load_nifti_field(path)
        if name.endswith((".h5", ".hdf5", ".tfm", ".txt", ".mat")):
            # a transform file has no header to read first: its size on disk is the least the field needs in memory
            check_transform_file_size(path)
            transform = sitk.ReadTransform(str(path))
            while transform.GetName() == "CompositeTransform" and transform.GetNumberOfTransforms() == 1:
                transform = transform.GetNthTransform(0)
            if transform.GetName() != "DisplacementFieldTransform":
                raise DiffDefInputError(f"{path}: expected a displacement-field transform, found {transform.GetName()}")
            return displacement_from_sitk(sitk.DisplacementFieldTransform(transform).GetDisplacementField())
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        check_size_limit(path, reader.GetSize(), reader.GetNumberOfComponents())  # from the header, before the voxels
        return displacement_from_sitk(reader.Execute())
    except DiffDefInputError as error:
        if str(error).startswith(str(path)):
            raise
        raise DiffDefInputError(f"{path}: {error}") from error  # a check deeper down that does not know the file
    except Exception as error:  # nibabel / SimpleITK raise many types for corrupt files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DiffDefInputError(f"{path}: cannot read a displacement field ({first_line})") from error
