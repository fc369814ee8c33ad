"""Labelled T1-like images synthesised from label maps, after SynthSeg (Billot et al., Med. Image Anal. 2023).

For each label id a Gaussian intensity (mean, std) is drawn; every voxel gets a sample of its label's Gaussian.
The image is then optionally blurred, multiplied by a smooth random bias field (exp of a cubic B-spline field on a
coarse control grid) and corrupted by additive Gaussian noise. Everything is drawn from one
``numpy.random.Generator`` seeded by ``seed``, so the same seed gives the same image.

Intensities are on a [0, 1]-like scale. With ``t1_like=True`` the means keep T1 ordering
(background < CSF < GM < WM; named non-brain tissue such as BrainWeb's fat and skull in T1-like ranges, unnamed
non-brain tissue such as SynthSeg's 5xx classes anywhere in [0, 1]); with ``t1_like=False`` every label's mean is
uniform in [0, 1], SynthSeg's contrast-agnostic setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DiffDefInputError
from .labelmaps import BACKGROUND, CSF, GM, NON_BRAIN, VENTRICLES, WM, as_label_array, class_lookup

#: T1-like mean ranges per class (on a [0, 1] scale).
T1_MEAN_RANGES: dict[int, tuple[float, float]] = {
    BACKGROUND: (0.0, 0.05),
    CSF: (0.08, 0.28),
    VENTRICLES: (0.08, 0.28),
    GM: (0.40, 0.60),
    WM: (0.70, 0.90),
    NON_BRAIN: (0.0, 1.0),
}
#: T1-like mean ranges of named non-brain labels, per convention (BrainWeb: fat bright, skull dark, ...).
T1_LABEL_MEAN_RANGES: dict[str, dict[int, tuple[float, float]]] = {
    "brainweb": {
        4: (0.80, 0.95),  # fat
        5: (0.25, 0.40),  # muscle
        6: (0.35, 0.55),  # muscle/skin
        7: (0.00, 0.08),  # skull
        9: (0.55, 0.75),  # connective tissue around fat
        10: (0.20, 0.40),  # dura mater
        11: (0.50, 0.70),  # bone marrow
    },
}
STD_RANGE = (0.01, 0.06)
BACKGROUND_STD_RANGE = (0.0, 0.02)


@dataclass
class SynthesisParams:
    """What was drawn: per-label ``means``/``stds``, the multiplicative ``bias_field`` (None when off) and noise."""

    means: dict[int, float]
    stds: dict[int, float]
    bias_field: np.ndarray | None = None
    noise_std: float = 0.0
    blur_sigma_mm: float = 0.0
    seed: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class SynthesisResult:
    """The synthesised image (array or Volume, like the input labels) and its :class:`SynthesisParams`."""

    image: object
    params: SynthesisParams


def sample_label_intensities(
    label_ids, convention: str, rng: np.random.Generator, *, t1_like: bool = True
) -> tuple[dict[int, float], dict[int, float]]:
    """Draw a Gaussian (mean, std) per label id; T1-like ranges follow the id's tissue class.

    Example:
        >>> means, stds = sample_label_intensities([0, 2, 3], "aseg", np.random.default_rng(0))
        >>> means[0] < means[3] < means[2]
        True
    """
    ids = sorted(int(i) for i in label_ids)
    classes = dict(zip(ids, class_lookup(np.array(ids), convention).tolist())) if t1_like else {}
    named = T1_LABEL_MEAN_RANGES.get(convention, {})
    means, stds = {}, {}
    for i in ids:
        if t1_like:
            lo, hi = named.get(i, T1_MEAN_RANGES[classes[i]])
            std_range = BACKGROUND_STD_RANGE if classes[i] == BACKGROUND else STD_RANGE
        else:
            lo, hi = 0.0, 1.0
            std_range = STD_RANGE
        means[i] = float(rng.uniform(lo, hi))
        stds[i] = float(rng.uniform(*std_range))
    return means, stds


def _bspline3(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel (C2-smooth, support [-2, 2])."""
    t = np.abs(t)
    out = np.zeros_like(t)
    near = t < 1
    far = (t >= 1) & (t < 2)
    out[near] = 2.0 / 3.0 - t[near] ** 2 + 0.5 * t[near] ** 3
    out[far] = (2.0 - t[far]) ** 3 / 6.0
    return out


def random_bias_field(shape: tuple[int, ...], rng: np.random.Generator, *, strength: float = 0.3, control_points: int = 4) -> np.ndarray:
    """A smooth positive multiplicative field ``exp(f)``: ``f`` is a cubic B-spline with N(0, ``strength``) coefficients.

    The coefficients sit on a ``control_points``-per-axis grid spanning the image (plus one outside each edge),
    so the field varies over about a quarter of the field of view.

    Example:
        >>> field = random_bias_field((32, 32, 32), np.random.default_rng(0))
        >>> field.shape, bool(field.min() > 0)
        ((32, 32, 32), True)
    """
    if control_points < 2:
        raise DiffDefInputError(f"bias field needs at least 2 control points per axis, found {control_points}")
    coeffs = rng.normal(0.0, strength, size=tuple(control_points + 2 for _ in shape))
    log_field = coeffs
    for axis, n in enumerate(shape):
        # Voxel positions in control-grid units: voxel 0 -> control 1, last voxel -> control ``control_points``.
        t = 1.0 + np.arange(n) * (control_points - 1) / max(n - 1, 1)
        weights = _bspline3(t[:, None] - np.arange(control_points + 2)[None, :])  # (n, controls)
        log_field = np.moveaxis(np.tensordot(weights, np.moveaxis(log_field, axis, 0), axes=(1, 0)), 0, axis)
    return np.exp(log_field).astype(np.float32)


def synthesise_image(
    labels,
    convention: str = "aseg",
    *,
    seed: int = 0,
    t1_like: bool = True,
    bias_strength: float = 0.3,
    bias_control_points: int = 4,
    noise_std: float = 0.02,
    blur_sigma_mm: float = 0.0,
) -> SynthesisResult:
    """Synthesise a T1-like image from a label map (array or :class:`~DiffDefAtlasLib.imageio.Volume`), SynthSeg style.

    Steps: per-label Gaussian intensities -> optional Gaussian blur (``blur_sigma_mm``; voxels for a bare array)
    -> bias field (``bias_strength`` = std of its log; 0 disables) -> additive noise (``noise_std``) -> clip at 0.
    Deterministic for a given ``seed``.

    Example:
        >>> result = synthesise_image(np.array([[0, 2], [3, 3]]), "aseg", seed=1, bias_strength=0, noise_std=0)
        >>> result.image.shape
        (2, 2)
    """
    volume = labels if hasattr(labels, "array") and hasattr(labels, "affine") else None
    array = as_label_array(volume.array if volume is not None else labels)
    if array.ndim not in (2, 3):
        raise DiffDefInputError(f"label map must be 2D or 3D, found {array.ndim}D")
    rng = np.random.default_rng(seed)
    offset = int(array.min())
    shifted = array - offset
    ids = np.flatnonzero(np.bincount(shifted.ravel())) + offset
    means, stds = sample_label_intensities(ids, convention, rng, t1_like=t1_like)
    mean_lut = np.zeros(int(ids.max()) - offset + 1, dtype=np.float32)
    std_lut = np.zeros_like(mean_lut)
    for i in ids:
        mean_lut[int(i) - offset], std_lut[int(i) - offset] = means[int(i)], stds[int(i)]
    image = mean_lut[shifted] + std_lut[shifted] * rng.standard_normal(array.shape, dtype=np.float32)

    if blur_sigma_mm > 0:
        from scipy.ndimage import gaussian_filter

        spacing = np.asarray(volume.grid.spacing) if volume is not None else np.ones(array.ndim)
        image = gaussian_filter(image, sigma=blur_sigma_mm / spacing).astype(np.float32)
    bias = None
    if bias_strength > 0:
        bias = random_bias_field(array.shape, rng, strength=bias_strength, control_points=bias_control_points)
        image = image * bias
    if noise_std > 0:
        image = image + noise_std * rng.standard_normal(array.shape, dtype=np.float32)
    np.maximum(image, 0.0, out=image)
    params = SynthesisParams(means, stds, bias, float(noise_std), float(blur_sigma_mm), seed)
    if volume is not None:
        from ..imageio import Volume

        return SynthesisResult(Volume(image, volume.affine), params)
    return SynthesisResult(image, params)
