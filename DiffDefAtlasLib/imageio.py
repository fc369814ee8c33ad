"""Image reading and writing (NIfTI, NRRD, MHA, DICOM series, 2D formats) through SimpleITK; MGH/MGZ through nibabel.

A :class:`Volume` is a numpy array indexed ``[i, j(, k)]`` plus its affine from voxel index to RAS mm, the
same convention as nibabel. Orientation is preserved exactly: reading a file and writing it back keeps its
voxel order and world geometry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from .atomic import atomic_path
from .errors import DiffDefInputError
from .spatial.convert import itk_to_ras_affine, ras_affine_to_itk
from .spatial.grid import Grid

#: Image size limit (bytes, as the requested dtype) when the physical memory cannot be determined.
DEFAULT_MAX_BYTES = 4 * 1024**3

#: :func:`check_image` refuses images with fewer voxels than this along an axis (derivatives need a few).
MIN_AXIS_VOXELS = 4

#: Environment variable overriding the default image size limit, in GiB (e.g. ``DIFFDEF_ATLAS_MAX_IMAGE_GB=2``).
MAX_IMAGE_GB_ENV = "DIFFDEF_ATLAS_MAX_IMAGE_GB"


def physical_memory_bytes() -> int | None:
    """Physical memory in bytes, or the container's memory limit when lower (``None`` where ``os.sysconf`` cannot
    tell, e.g. on Windows).

    Example:
        >>> physical_memory_bytes() is None or physical_memory_bytes() > 0
        True
    """
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    memory = int(pages) * int(page_size)
    limit = _cgroup_memory_limit()
    return min(memory, limit) if limit else memory


def _cgroup_memory_limit() -> int | None:
    """The memory limit of this process's container (cgroup v2 or v1), or ``None`` when there is none."""
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(name, encoding="ascii") as stream:
                text = stream.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return None


def default_max_bytes() -> int:
    """The largest image :func:`read_image` accepts by default: a quarter of the physical memory (processing holds
    several copies of an image), 4 GiB where the memory is unknown; ``DIFFDEF_ATLAS_MAX_IMAGE_GB`` overrides it.

    Example:
        >>> default_max_bytes() > 0
        True
    """
    override = os.environ.get(MAX_IMAGE_GB_ENV, "").strip()
    if override:
        try:
            value = float(override)
        except ValueError:
            raise DiffDefInputError(f"{MAX_IMAGE_GB_ENV}: expected a number of GiB, found {override!r}") from None
        if not value > 0:
            raise DiffDefInputError(f"{MAX_IMAGE_GB_ENV}: expected a positive number of GiB, found {override!r}")
        return int(value * 1024**3)
    memory = physical_memory_bytes()
    return DEFAULT_MAX_BYTES if memory is None else memory // 4


def check_size_limit(path: str | Path, shape, components: int = 1, dtype=np.float32, max_bytes: int | None = None) -> None:
    """Refuse an image of ``shape`` (read from its header) whose voxels, as ``dtype`` (8 bytes when ``None``: kept
    native), would exceed ``max_bytes`` (default :func:`default_max_bytes`); call it before allocating.

    Example:
        >>> check_size_limit("big.nii", (30000, 30000, 30000), max_bytes=2**30)
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.errors.DiffDefInputError: big.nii: image of size 30000x30000x30000 needs 100583 GiB, more than the 1 GiB allowed (set DIFFDEF_ATLAS_MAX_IMAGE_GB to change the limit)
    """
    max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
    nbytes = float(np.prod([float(s) for s in shape])) * max(int(components), 1) * itemsize
    if nbytes > max_bytes:
        raise DiffDefInputError(
            f"{path}: image of size {'x'.join(str(int(s)) for s in shape)} needs {format_bytes(nbytes)}, "
            f"more than the {format_bytes(max_bytes)} allowed (set {MAX_IMAGE_GB_ENV} to change the limit)"
        )


def format_bytes(nbytes: float) -> str:
    """A size in GiB, or in MiB / KiB / bytes when smaller, with three significant digits below 1000.

    Example:
        >>> format_bytes(1.5 * 1024**3), format_bytes(10737418), format_bytes(512)
        ('1.5 GiB', '10.2 MiB', '512 bytes')
    """
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} bytes"


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

    def __repr__(self) -> str:
        """Shape, type, spacing and origin, not the voxels (a 3D scan has millions)."""
        spacing = np.linalg.norm(self.affine[:-1, :-1], axis=0)
        fmt = ", ".join
        return (f"Volume(shape={tuple(self.array.shape)}, dtype={self.array.dtype}, "
                f"spacing=({fmt(f'{v:g}' for v in spacing)}), origin=({fmt(f'{v:g}' for v in self.affine[:-1, -1])}))")

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


def _nifti_header(path: Path):
    """The raw NIfTI-1/2 header of ``path`` (values as stored, not "fixed"), or ``None`` when it cannot be parsed."""
    import io

    import nibabel as nib

    try:
        with nib.openers.Opener(str(path)) as stream:
            raw = stream.read(540)
        size = int(np.frombuffer(raw[:4], "<i4")[0])
        if size not in (348, 540):
            size = int(np.frombuffer(raw[:4], ">i4")[0])
        header_class = nib.Nifti2Header if size == 540 else nib.Nifti1Header
        return header_class.from_fileobj(io.BytesIO(raw), check=False)
    except Exception:
        return None  # SimpleITK reports unreadable files


def _inspect_nifti(path: Path, max_bytes: int, dtype) -> None:
    """Checks of a NIfTI file before SimpleITK reads it, from its raw header and one streaming pass over its voxels.

    - zero or negative voxel sizes (readers silently replace them by 1);
    - the size limit, from the header, before any voxel is allocated;
    - truncated voxel data or gzip stream (SimpleITK silently reads a truncated gzip stream as a partial image);
    - NaN or Inf voxels (SimpleITK's NIfTI reader silently turns them into 0).
    """
    import gzip
    import zlib

    import nibabel as nib

    header = _nifti_header(path)
    if header is None:
        if path.name.lower().endswith(".gz"):
            verify_gzip_stream(path)
        return
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        return  # SimpleITK reports the malformed header
    shape = [int(d) for d in header["dim"][1 : ndim + 1]]
    zooms = [float(z) for z in header["pixdim"][1 : min(ndim, 3) + 1]]
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise DiffDefInputError(f"{_describe(path)}: voxel spacing must be positive, found {tuple(zooms)} in the header")
    if any(d < 0 for d in shape):
        raise DiffDefInputError(f"{_describe(path)}: negative image size {tuple(shape)} in the header")
    check_size_limit(path, shape, 1, dtype, max_bytes)
    try:
        stored = header.get_data_dtype()
    except Exception:
        return
    minimum_offset = 544 if isinstance(header, nib.Nifti2Header) else 352  # single-file NIfTI: voxels follow the header
    offset = max(int(header["vox_offset"]), minimum_offset)
    expected = int(np.prod(shape, dtype=np.int64)) * stored.itemsize
    check_values = stored.kind in "fc"
    is_gz = path.name.lower().endswith(".gz")
    if not (is_gz or check_values):
        return
    chunk = (1 << 22) // max(stored.itemsize, 1) * max(stored.itemsize, 1)
    found = bad = 0
    opener = gzip.open if is_gz else open
    try:
        with opener(path, "rb") as stream:
            stream.read(offset)
            while found < expected:
                block = stream.read(min(chunk, expected - found))
                if not block:
                    break
                found += len(block)
                if check_values:
                    whole = len(block) - len(block) % stored.itemsize
                    values = np.frombuffer(block[:whole], dtype=stored)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            if is_gz:
                while stream.read(chunk):  # to the end: the gzip checksum is verified there
                    pass
    except (EOFError, OSError, zlib.error) as error:
        raise DiffDefInputError(f"{_describe(path)}: corrupt or truncated gzip data ({error})") from error
    if found < expected:
        raise DiffDefInputError(f"{_describe(path)}: truncated file: the header announces {expected} bytes of voxels, found {found}")
    if bad:
        raise DiffDefInputError(f"{_describe(path)}: {bad} voxels are NaN or Inf; expected finite intensities")


def _read_mgh(path: Path, dtype: type | None, max_bytes: int) -> Volume:
    """FreeSurfer MGH/MGZ through nibabel (SimpleITK has no MGH reader); same ``[i, j, k]`` + RAS convention."""
    import nibabel as nib

    try:
        image = cast("nib.MGHImage", nib.load(str(path)))
    except Exception as error:
        raise DiffDefInputError(f"{_describe(path)}: cannot read image ({_error_line(error)})") from error
    check_size_limit(path, image.shape, 1, dtype, max_bytes)
    try:
        array = np.asarray(image.dataobj)
    except Exception as error:
        raise DiffDefInputError(f"{_describe(path)}: cannot read image ({_error_line(error)})") from error
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DiffDefInputError(f"{_describe(path)}: expected a 3D image, found shape {array.shape}")
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        raise DiffDefInputError(f"{_describe(path)}: {int((~np.isfinite(array)).sum())} voxels are NaN or Inf; expected finite intensities")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(array), image.affine)


def _reader(path: Path):
    import SimpleITK as sitk

    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise DiffDefInputError(f"{_describe(path)}: folder holds no DICOM series")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader, None
    file_reader = sitk.ImageFileReader()
    file_reader.SetFileName(str(path))
    return file_reader, file_reader


def header_shape(path: str | Path) -> tuple[int, ...] | None:
    """An image's size from its header alone, components last (a DICOM folder: slice size x slices); None when the
    header cannot be read (:func:`read_image` then names the problem)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        if path.is_dir():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                return None
            size = _header_size(files[0])
            return (*size[:2], len(files), size[-1])
        if path.name.lower().endswith((".mgz", ".mgh")):
            import nibabel as nib

            shape = tuple(int(n) for n in nib.MGHImage.from_filename(str(path)).shape)
            return shape if len(shape) > 3 else (*shape, 1)
        return _header_size(str(path))
    except Exception:
        return None


def _header_size(path: str) -> tuple[int, ...]:
    """The image size in a file's header, voxels times components (SimpleITK reads the header only)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return (*reader.GetSize(), max(1, reader.GetNumberOfComponents()))


def read_image(path: str | Path, *, max_bytes: int | None = None, dtype: type | None = np.float32) -> Volume:
    """Read an image file (or a DICOM series folder) into a :class:`Volume`.

    The header is read first: an image whose voxels would not fit in ``max_bytes`` (as ``dtype``; default
    :func:`default_max_bytes`, a quarter of the physical memory) is refused before any voxel is allocated. Corrupt,
    truncated or unsupported files, zero or negative spacing and NaN or Inf voxels raise :class:`DiffDefInputError`
    naming the file. Vector and multi-component images are refused (use
    :func:`DiffDefAtlasLib.spatial.load_displacement` for fields).

    Example:
        >>> volume = read_image("scan.nii.gz")  # doctest: +SKIP
    """

    path = Path(path)
    max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
    if not path.exists():
        raise DiffDefInputError(f"{_describe(path)}: file not found")
    lower = path.name.lower()
    if path.is_file() and lower.endswith((".nii", ".nii.gz")):
        _inspect_nifti(path, max_bytes, dtype)
    elif path.is_file() and lower.endswith(".gz"):
        verify_gzip_stream(path)
    if path.is_file() and lower.endswith((".mgz", ".mgh")):
        return _read_mgh(path, dtype, max_bytes)
    try:
        reader, file_reader = _reader(path)
        if file_reader is not None:
            file_reader.ReadImageInformation()
            check_size_limit(path, file_reader.GetSize(), file_reader.GetNumberOfComponents(), dtype, max_bytes)
        image = reader.Execute()
    except DiffDefInputError:
        raise
    except MemoryError:
        raise DiffDefInputError(f"{_describe(path)}: not enough memory to read this image") from None
    except Exception as error:
        raise DiffDefInputError(f"{_describe(path)}: cannot read image ({_error_line(error)})") from error
    volume = volume_from_sitk(image, name=_describe(path), dtype=dtype)
    array = volume.array
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        raise DiffDefInputError(f"{_describe(path)}: {int((~np.isfinite(array)).sum())} voxels are NaN or Inf; expected finite intensities")
    return volume


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
    min_size: int = MIN_AXIS_VOXELS,
) -> Volume:
    """Validate a volume read from user input; raise :class:`DiffDefInputError` with a one-line reason.

    Checks: the number of dimensions (2D image for a 3D model or the reverse), at least ``min_size`` voxels along
    every axis (a 2D slice stored as a one-slice 3D volume is refused), non-positive spacing, NaN or Inf voxels and
    an all-zero image.

    Example:
        >>> check_image(Volume(np.ones((8, 8, 1), np.float32), np.eye(4)), "slice.nii.gz")
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.errors.DiffDefInputError: slice.nii.gz: expected at least 4 voxels along every axis of a 3D image, found 8x8x1 (save a single slice as a 2D image)
    """
    array = volume.array
    shape = "x".join(map(str, array.shape))
    if spatial_dims is not None and array.ndim != spatial_dims:
        raise DiffDefInputError(f"{name}: expected a {spatial_dims}D image, found {array.ndim}D ({shape})")
    if min(array.shape) < min_size:
        hint = " (save a single slice as a 2D image)" if array.ndim == 3 and sorted(array.shape)[0] == 1 else ""
        raise DiffDefInputError(f"{name}: expected at least {min_size} voxels along every axis of a {array.ndim}D image, found {shape}{hint}")
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
