"""Image reading and writing (NIfTI, NRRD, MHA, MGH, DICOM series, 2D formats) through SimpleITK.

A :class:`Volume` is a numpy array indexed ``[i, j(, k)]`` plus its affine from voxel index to RAS mm, the
same convention as nibabel. Orientation is preserved exactly: reading a file and writing it back keeps its
voxel order and world geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DiffDefInputError
from .spatial.convert import itk_to_ras_affine, ras_affine_to_itk
from .spatial.grid import Grid

#: Refuse images above this many bytes (as float32) before reading their voxels.
DEFAULT_MAX_BYTES = 4 * 1024**3


@dataclass
class Volume:
    """An image array indexed ``[i, j(, k)]`` and its voxel-to-RAS affine.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
        >>> v.grid.shape
        (4, 5, 6)
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (self.array.ndim + 1, self.array.ndim + 1):
            raise DiffDefInputError(
                f"a {self.array.ndim}D array needs a {self.array.ndim + 1}x{self.array.ndim + 1} affine, found {self.affine.shape}"
            )

    @property
    def grid(self) -> Grid:
        """The sampling grid of this volume."""
        return Grid(self.array.shape, self.affine)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.array.ndim


def _describe(path: Path) -> str:
    return str(path)


def _error_line(error: Exception) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # SimpleITK errors are multi-line; keep the most informative short line.
    if "spacing is not supported" in text:
        return "zero or negative voxel spacing in the header"
    for line in lines:
        if "Unable to determine ImageIO" in line or "not a" in line.lower():
            return line
    return lines[-1][:200] if lines else type(error).__name__


def verify_gzip_stream(path: Path, chunk: int = 1 << 22) -> None:
    """Decompress a ``.gz`` file to its end: SimpleITK silently reads truncated gzip streams as partial images."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(chunk):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise DiffDefInputError(f"{_describe(path)}: corrupt or truncated gzip data ({error})") from error


def _check_nifti_spacing(path: Path) -> None:
    """Refuse zero or negative voxel sizes in a NIfTI header (readers silently replace them by 1)."""
    import nibabel as nib

    try:
        with nib.openers.Opener(str(path)) as stream:
            header = nib.Nifti1Header.from_fileobj(stream, check=False)  # raw values, not "fixed" ones
    except Exception:
        return  # SimpleITK reports unreadable files below
    ndim = int(header["dim"][0])
    zooms = [float(z) for z in header["pixdim"][1 : min(ndim, 3) + 1]]
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise DiffDefInputError(f"{_describe(path)}: voxel spacing must be positive, found {tuple(zooms)} in the header")


def _reader(path: Path):
    import SimpleITK as sitk

    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise DiffDefInputError(f"{_describe(path)}: folder holds no DICOM series")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader, None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader, reader


def read_image(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, dtype: type = np.float32) -> Volume:
    """Read an image file (or a DICOM series folder) into a :class:`Volume`.

    The header is read first: an image whose voxels would not fit in ``max_bytes`` (as ``dtype``) is refused before
    any voxel is allocated. Corrupt or unsupported files raise :class:`DiffDefInputError` naming the file.
    Vector and multi-component images are refused (use
    :func:`DiffDefAtlasLib.spatial.load_displacement` for fields).

    Example:
        >>> volume = read_image("scan.nii.gz")  # doctest: +SKIP
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise DiffDefInputError(f"{_describe(path)}: file not found")
    if path.is_file() and path.name.lower().endswith(".gz"):
        verify_gzip_stream(path)
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_spacing(path)
    try:
        reader, file_reader = _reader(path)
        if file_reader is not None:
            file_reader.ReadImageInformation()
            size = file_reader.GetSize()
            components = file_reader.GetNumberOfComponents()
            nbytes = int(np.prod(size, dtype=np.float64)) * max(components, 1) * np.dtype(dtype).itemsize
            if nbytes > max_bytes:
                raise DiffDefInputError(
                    f"{_describe(path)}: image of size {'x'.join(map(str, size))} needs {nbytes / 1024**3:.1f} GiB, "
                    f"more than the {max_bytes / 1024**3:.1f} GiB allowed"
                )
        image = reader.Execute()
    except DiffDefInputError:
        raise
    except Exception as error:
        raise DiffDefInputError(f"{_describe(path)}: cannot read image ({_error_line(error)})") from error
    return volume_from_sitk(image, name=_describe(path), dtype=dtype)


def volume_from_sitk(image, *, name: str = "image", dtype: type | None = np.float32) -> Volume:
    """Convert a scalar SimpleITK image into a :class:`Volume` (LPS to RAS, ``[k, j, i]`` to ``[i, j, k]``)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DiffDefInputError(
            f"{name}: expected a scalar image, found {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    ndim = image.GetDimension()
    size = list(image.GetSize())
    if ndim == 4:
        raise DiffDefInputError(f"{name}: expected a 2D or 3D image, found 4D ({'x'.join(map(str, size))})")
    if ndim not in (2, 3):
        raise DiffDefInputError(f"{name}: expected a 2D or 3D image, found {ndim}D")
    spacing = image.GetSpacing()
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise DiffDefInputError(f"{name}: voxel spacing must be positive, found {tuple(spacing)}")
    array = sitk.GetArrayFromImage(image).transpose(*range(ndim - 1, -1, -1))
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    affine = itk_to_ras_affine(image.GetOrigin(), spacing, image.GetDirection())
    return Volume(np.ascontiguousarray(array), affine)


def volume_to_sitk(volume: Volume):
    """Convert a :class:`Volume` into a SimpleITK image with LPS geometry."""
    import SimpleITK as sitk

    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(*range(array.ndim - 1, -1, -1))))
    origin, spacing, direction = ras_affine_to_itk(volume.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def write_image(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Write a :class:`Volume` atomically (temporary file, then rename); the suffix picks the format.

    Example:
        >>> write_image(Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), "out.nii.gz")  # doctest: +SKIP
    """
    import SimpleITK as sitk

    path = Path(path)
    image = volume_to_sitk(volume)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def check_image(
    volume: Volume,
    name: str,
    *,
    spatial_dims: int | None = None,
    allow_empty: bool = False,
) -> Volume:
    """Validate a volume read from user input; raise :class:`DiffDefInputError` with a one-line reason.

    Checks: the number of dimensions (2D image for a 3D model or the reverse), NaN or Inf voxels, an all-zero image,
    and non-positive spacing.
    """
    array = volume.array
    if spatial_dims is not None and array.ndim != spatial_dims:
        raise DiffDefInputError(
            f"{name}: expected a {spatial_dims}D image, found {array.ndim}D ({'x'.join(map(str, array.shape))})"
        )
    if any(s <= 0 or not np.isfinite(s) for s in volume.grid.spacing):
        raise DiffDefInputError(f"{name}: voxel spacing must be positive, found {volume.grid.spacing}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            kind = "NaN" if np.isnan(array).any() else "Inf"
            raise DiffDefInputError(f"{name}: {int(bad.sum())} voxels are {kind}; expected finite intensities")
    if not allow_empty and not np.any(array):
        raise DiffDefInputError(f"{name}: every voxel is zero; expected an image with content")
    return volume
