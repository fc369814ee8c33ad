"""Skull-aware affine alignment of a scan to a brain image, shared by ``prepare`` and ``register``.

A full-head T1 (skull, scalp, face, neck) defeats a moments-initialised affine: the head's centre of mass lies far
below the brain's, and the optimiser settles with the brain on the orbits or the vertex. The path here starts
from a landmark that a head and a brain share, the top of the head (or brain), then runs a similarity stage and
an affine stage by Mattes mutual information restricted to the fixed brain mask (:func:`anchored_affine`).

Whether a scan still has its skull is decided after alignment: a head puts much of its foreground outside the
fixed brain (:func:`outside_brain_fraction`). Skull-stripped IXI scans score 0.05-0.08, heads 0.25-0.45.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DiffDefInputError
from ..imageio import Volume, volume_from_sitk, volume_to_sitk
from .affine import AffineSettings, affine_register, mattes_registration, ras_matrix_to_sitk, sitk_to_ras_matrix
from ..template import load_template
from .resampling import resample

#: ``outside_brain_fraction`` above which a scan is taken to have its skull (see the module docstring).
SKULL_THRESHOLD = 0.15
#: How far (mm) the top of the brain lies below the top of the head, for the anchor of a head.
SCALP_MM = 8.0
#: A scan whose voxels are exactly at the minimum in more than this fraction had its background zeroed (stripped).
ZERO_BACKGROUND_STRIPPED = 0.3


def zero_background_fraction(volume: Volume) -> float:
    """Fraction of voxels exactly at the image minimum: large (> 0.3) for skull-stripped scans with a zeroed background."""
    array = np.asarray(volume.array)
    return float(np.mean(array <= array.min()))


def foreground_mask(array: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels brighter than ``fraction`` of the 99th percentile of the positive voxels."""
    positive = array[array > 0]
    if positive.size == 0:
        return np.zeros(array.shape, dtype=bool)
    return array > fraction * np.percentile(positive, 99)


def top_anchor(volume: Volume, mask: np.ndarray, slab_mm: float = 80.0) -> np.ndarray:
    """A landmark (RAS mm): x and y of the centroid of the top ``slab_mm`` of ``mask``, z of its top (99.9th percentile).

    The top of the head (or brain) is a robust landmark even when the face and neck move the centroid.
    """
    ijk = np.argwhere(mask)
    if len(ijk) == 0:
        raise DiffDefInputError("the image has no foreground voxels; expected a brain or head scan")
    xyz = volume.grid.voxel_to_world_points(ijk.astype(np.float64))
    top = float(np.percentile(xyz[:, 2], 99.9))
    slab = xyz[xyz[:, 2] >= top - slab_mm]
    return np.array([slab[:, 0].mean(), slab[:, 1].mean(), top])


def shrink_to_spacing(volume: Volume, spacing_mm: float = 2.0) -> Volume:
    """Average voxels in blocks (SimpleITK ``BinShrink``) to about ``spacing_mm``; used to speed up registration."""
    import SimpleITK as sitk

    factors = [max(1, int(round(spacing_mm / s))) for s in volume.grid.spacing]
    if all(f == 1 for f in factors):
        return volume
    return volume_from_sitk(sitk.BinShrink(sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32), factors))


def outside_brain_fraction(image: np.ndarray, brain_mask: np.ndarray, dilation_voxels: int = 2) -> float:
    """Fraction of the foreground (see :func:`foreground_mask`) outside ``brain_mask`` dilated by ``dilation_voxels``."""
    from scipy.ndimage import binary_dilation

    foreground = foreground_mask(image)
    if not foreground.any():
        return 0.0
    near_brain = binary_dilation(brain_mask > 0, iterations=dilation_voxels)
    return float(np.logical_and(foreground, ~near_brain).sum() / foreground.sum())


def _mi_stage(fixed, moving, mask, initial: np.ndarray, centre: np.ndarray, kind: str, settings: AffineSettings) -> np.ndarray:
    """One multi-resolution Mattes-MI stage (``kind`` = "similarity" or "affine") from an initial RAS matrix whose
    linear part is a similarity; rotation and scaling act about ``centre`` (RAS mm)."""
    import SimpleITK as sitk

    # The similarity stage runs on the coarse levels only, the affine stage on all.
    levels = slice(0, -1) if kind == "similarity" and len(settings.shrink_factors) > 1 else slice(None)
    reg = mattes_registration(settings, settings.shrink_factors[levels], settings.smoothing_sigmas_mm[levels], mask=mask)
    start = ras_matrix_to_sitk(initial)  # centre 0
    lps_centre = np.asarray(centre, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])
    a = np.array(start.GetMatrix()).reshape(3, 3)
    translation = np.array(start.GetTranslation()) + a @ lps_centre - lps_centre
    transform: sitk.Similarity3DTransform | sitk.AffineTransform
    if kind == "similarity":
        transform = sitk.Similarity3DTransform()
        transform.SetCenter(lps_centre.tolist())
        transform.SetMatrix(start.GetMatrix())  # must be a similarity (scaled rotation)
        transform.SetTranslation(translation.tolist())
    else:
        transform = sitk.AffineTransform(start.GetMatrix(), translation.tolist(), lps_centre.tolist())
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    if kind == "similarity":
        transform = sitk.AffineTransform(transform.GetMatrix(), transform.GetTranslation(), transform.GetCenter())
    return sitk_to_ras_matrix(transform, 3)


def anchored_affine(
    fixed: Volume,
    fixed_mask: Volume,
    moving: Volume,
    *,
    has_skull: bool,
    settings: AffineSettings = AffineSettings(iterations=50, sampling=0.3),
    scalp_mm: float = SCALP_MM,
) -> np.ndarray:
    """4x4 RAS matrix (fixed -> moving points) aligning a 3D scan, head or brain, to a brain image by Mattes MI.

    Initialised by matching :func:`top_anchor` of the scan (``scalp_mm`` lower for a head) with that of the fixed
    brain mask, then a similarity stage on the coarse pyramid levels and an affine stage on all levels, each
    restricted to ``fixed_mask``. The scan is block-averaged to about the fixed spacing first.

    Example:
        >>> template = load_template("2mm")  # doctest: +SKIP
        >>> matrix = anchored_affine(template.t1, template.brain_mask, head, has_skull=True)  # doctest: +SKIP
    """
    import SimpleITK as sitk

    try:
        small = shrink_to_spacing(moving, min(fixed.grid.spacing))
        brain = np.asarray(fixed_mask.array) > 0
        anchor_fixed = top_anchor(fixed_mask, brain)
        anchor_moving = top_anchor(small, foreground_mask(np.asarray(small.array)))
        if has_skull:
            anchor_moving[2] -= scalp_mm
        initial = np.eye(4)
        initial[:3, 3] = anchor_moving - anchor_fixed
        fixed_image = sitk.Cast(volume_to_sitk(fixed), sitk.sitkFloat32)
        moving_image = sitk.Cast(volume_to_sitk(small), sitk.sitkFloat32)
        mask_image = sitk.Cast(volume_to_sitk(Volume(brain.astype(np.uint8), fixed_mask.affine)), sitk.sitkUInt8)
        centre = fixed_mask.grid.voxel_to_world_points(np.argwhere(brain).mean(axis=0))
        similarity = _mi_stage(fixed_image, moving_image, mask_image, initial, centre, "similarity", settings)
        return _mi_stage(fixed_image, moving_image, mask_image, similarity, centre, "affine", settings)
    except RuntimeError as error:  # ITK: too few samples inside the mask, a collapsed matrix...
        reason = str(error).strip().splitlines()[-1][:160] if str(error).strip() else "ITK error"
        raise DiffDefInputError(f"affine registration failed ({reason}); check the images or pass --no-affine") from error


#: How a scan with its skull is handled: ``auto`` (deepbet when installed, else the template brain), ``deepbet``
#: (brain extraction by the deepbet models; an error when it is not installed) or ``template``.
BRAIN_EXTRACTION_MODES = ("auto", "deepbet", "template")


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_scan`: the affine (fixed -> moving points, RAS), whether the scan has its skull, the
    skull score after alignment, the method that produced the matrix (``"moments"``, ``"top-anchor"`` or
    ``"deepbet"``: the moments affine of the extracted brain) and, with deepbet, the scan's brain mask (its grid)."""

    matrix: np.ndarray
    has_skull: bool
    outside_fraction: float
    method: str
    brain_mask: Volume | None = None

    def as_dict(self) -> dict:
        """JSON-ready form for a summary."""
        return {"method": self.method, "has_skull": self.has_skull, "outside_brain_fraction": self.outside_fraction}


def skull_score(moving: Volume, matrix: np.ndarray, fixed_mask: Volume) -> float:
    """:func:`outside_brain_fraction` of ``moving`` resampled through ``matrix`` onto the grid of ``fixed_mask``."""
    warped = resample(moving, fixed_mask.grid, matrix)[0, 0].numpy()
    return outside_brain_fraction(warped, np.asarray(fixed_mask.array) > 0)


def deepbet_available() -> bool:
    """True when the optional ``deepbet`` package (``pip install diffdef-atlas[brain-extraction]``) imports."""
    import importlib.util

    return importlib.util.find_spec("deepbet") is not None


def deepbet_brain_mask(volume: Volume) -> Volume:
    """The brain mask of a 3D head scan from deepbet's two bundled models (Fisch et al., 2024), on the scan's grid."""
    import warnings

    import nibabel as nib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepbet import BrainExtraction

        extractor = BrainExtraction(no_gpu=True)
        _, mask, _ = extractor.run(nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), volume.affine))
    array = np.asarray(mask.dataobj) > 0
    if not array.any():
        raise DiffDefInputError("brain extraction (deepbet) found no brain in the scan; expected a T1 head scan")
    return Volume(array.astype(np.uint8), volume.affine)


def align_scan(
    fixed: Volume, fixed_mask: Volume, moving: Volume, *, threshold: float = SKULL_THRESHOLD, brain_extraction: str = "auto"
) -> Alignment:
    """Affine alignment of ``moving`` (a skull-stripped brain or a full head) to the brain image ``fixed``.

    A scan with a zeroed background (skull-stripped) first gets the moments-initialised affine of
    :func:`~DiffDefAtlasLib.imaging.affine.affine_register`. When that leaves much foreground outside the fixed
    brain, or when the scan has a head's background, it is treated as a head: with deepbet installed (and
    ``brain_extraction`` "auto" or "deepbet") its extracted brain gets the moments affine; otherwise the
    top-anchored path (:func:`anchored_affine`) runs. 2D images always take the moments path.
    """
    if brain_extraction not in BRAIN_EXTRACTION_MODES:
        raise DiffDefInputError(f"brain extraction: expected one of {', '.join(BRAIN_EXTRACTION_MODES)}, found {brain_extraction!r}")
    if brain_extraction == "deepbet" and not deepbet_available():
        raise DiffDefInputError("brain extraction 'deepbet' needs the deepbet package: pip install 'diffdef-atlas[brain-extraction]'")
    if fixed.spatial_dims != 3:
        return Alignment(affine_register(fixed, moving, fixed_mask=fixed_mask), False, 0.0, "moments")
    looks_stripped = zero_background_fraction(moving) > ZERO_BACKGROUND_STRIPPED
    if looks_stripped:
        matrix = affine_register(fixed, moving, fixed_mask=fixed_mask)
        outside = skull_score(moving, matrix, fixed_mask)
        if outside <= threshold:
            return Alignment(matrix, False, outside, "moments")
    if brain_extraction == "deepbet" or (brain_extraction == "auto" and deepbet_available()):
        brain = deepbet_brain_mask(moving)
        stripped = Volume(np.asarray(moving.array, dtype=np.float32) * brain.array, moving.affine)
        matrix = affine_register(fixed, stripped, fixed_mask=fixed_mask)
        return Alignment(matrix, True, skull_score(moving, matrix, fixed_mask), "deepbet", brain)
    matrix = anchored_affine(fixed, fixed_mask, moving, has_skull=not looks_stripped)
    outside = skull_score(moving, matrix, fixed_mask)
    return Alignment(matrix, outside > threshold, outside, "top-anchor")


def brain_mask_from_template(image: Volume) -> Volume:
    """A brain mask for a full-head 3D ``image``: the bundled template's brain mask carried onto it by
    :func:`anchored_affine` (the template is registered to the head)."""
    template = load_template("2mm")
    matrix = anchored_affine(template.t1, template.brain_mask, image, has_skull=True)  # template -> image points
    carried = resample(template.brain_mask, image.grid, np.linalg.inv(matrix), labels=True)
    return Volume((carried[0, 0].numpy() > 0).astype(np.uint8), image.affine)
