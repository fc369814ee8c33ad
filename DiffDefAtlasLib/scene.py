"""What the 3D Slicer module shows, decided without Slicer: array order, geometry, sliders, colours, export names.

The Slicer module (``DiffDefAtlas/``) only moves arrays and matrices in and out of MRML nodes; every choice it makes
is a function here or in :mod:`DiffDefAtlasLib.slicer_support` (node layers, grid-transform images, widget state,
dependencies), so it is tested by pytest without Slicer:

- :func:`volume_to_slicer_array` / :func:`volume_from_slicer_array`: a :class:`~DiffDefAtlasLib.imageio.Volume`
  (indexed ``[i, j, k]``) to and from the ``[k, j, i]`` array and IJK-to-RAS matrix of a Slicer volume node.
- :func:`split_ijk_to_ras`: origin, spacing and axis directions of a ``vtkImageData`` / ``vtkOrientedGridTransform``.
- :func:`condition_controls`: one slider (or combo box) per condition of a model card, with its trained range.
- :func:`jacobian_window_level`, :func:`magnitude_window_level`, :func:`label_colors`: overlay display choices.
- :func:`export_stem` / :func:`export_atlas`: file names and the files written by the module's Export button.

Nothing here imports slicer, qt, ctk, vtk or torch at file scope (only numpy), so the module can use it before the
heavy dependencies are installed; :func:`describe_device` and the functions that build or write a ``Volume`` import
what they need when called.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, cast

import numpy as np

from .conditions.spec import KINDS
from .errors import DiffDefInputError
from .results import EXPORT_SUFFIXES

if TYPE_CHECKING:  # imageio pulls in the spatial package (torch); the module needs this file before torch exists
    from .imageio import Volume

#: Slicer's diverging blue-white-red colour table node (a built-in node ID).
JACOBIAN_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: Colour table node for the displacement magnitude (built-in).
MAGNITUDE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileViridis.txt"

#: Extra Python packages the extension installs with pip inside Slicer (after asking). torch comes from the PyTorch
#: extension; numpy, SimpleITK, vtk and pillow ship with Slicer.
SLICER_PIP_REQUIREMENTS = ("monai>=1.4", "nibabel>=5.0", "safetensors>=0.4", "tqdm>=4.60")
#: The minimum torch version, passed to ``PyTorchUtils``.
TORCH_REQUIREMENT = ">=2.1"


def requirement_name(requirement: str) -> str:
    """The distribution name of a pip requirement: ``"monai>=1.4"`` gives ``"monai"``."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def missing_requirements(requirements: Sequence[str] = SLICER_PIP_REQUIREMENTS, version_of=None) -> list[str]:
    """The requirements not yet satisfied; ``version_of(name)`` returns an installed version or raises.

    Only ``>=`` lower bounds are compared (that is all :data:`SLICER_PIP_REQUIREMENTS` uses).

    Example:
        >>> missing_requirements(["monai>=1.4", "tqdm"], version_of={"monai": "1.3.2", "tqdm": "4.66"}.__getitem__)
        ['monai>=1.4']
    """
    if version_of is None:
        from importlib.metadata import version as version_of
    missing = []
    for requirement in requirements:
        name = requirement_name(requirement)
        try:
            installed = str(version_of(name))
        except Exception:  # PackageNotFoundError, KeyError from a lookup table
            missing.append(requirement)
            continue
        match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
        if match and _version_tuple(installed) < _version_tuple(match.group(1)):
            missing.append(requirement)
    return missing


def _version_tuple(text: str) -> tuple[int, ...]:
    numbers = []
    for part in re.split(r"[.+-]", text):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


# --------------------------------------------------------------------------------------------------------------------
# Arrays and geometry


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
    from .imageio import Volume

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


# --------------------------------------------------------------------------------------------------------------------
# Display choices


@dataclass(frozen=True)
class WindowLevel:
    """A Slicer display window and level; :attr:`minimum` / :attr:`maximum` are the ends of the colour ramp."""

    window: float
    level: float

    @property
    def minimum(self) -> float:
        return self.level - self.window / 2.0

    @property
    def maximum(self) -> float:
        return self.level + self.window / 2.0


def jacobian_window_level(
    jacobian: np.ndarray | None = None,
    *,
    half_width: float | None = None,
    percentile: float = 99.0,
    limits: tuple[float, float] = (0.05, 1.0),
) -> WindowLevel:
    """Window/level for det J on a diverging map: always centred on 1 (no volume change = white).

    With ``half_width`` given it is used as is; otherwise it is the ``percentile`` of ``|det J - 1|`` clipped to
    ``limits``, so expansion and shrinkage get the same colour scale.

    Example:
        >>> jacobian_window_level(half_width=0.5)
        WindowLevel(window=1.0, level=1.0)
    """
    if half_width is None:
        if jacobian is None:
            raise ValueError("give a Jacobian array or a half_width")
        values = np.abs(np.asarray(jacobian, dtype=np.float64) - 1.0)
        values = values[np.isfinite(values)]
        half_width = float(np.percentile(values, percentile)) if values.size else limits[1]
        half_width = min(limits[1], max(limits[0], half_width))
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0, found {half_width}")
    return WindowLevel(window=2.0 * float(half_width), level=1.0)


def magnitude_window_level(magnitude: np.ndarray, percentile: float = 99.0) -> WindowLevel:
    """Window/level for the displacement magnitude (mm): from 0 to its ``percentile`` (at least 1 mm).

    Example:
        >>> magnitude_window_level(np.linspace(0, 10, 101), percentile=100)
        WindowLevel(window=10.0, level=5.0)
    """
    values = np.asarray(magnitude, dtype=np.float64)
    values = values[np.isfinite(values)]
    top = max(1.0, float(np.percentile(values, percentile))) if values.size else 1.0
    return WindowLevel(window=top, level=top / 2.0)


_DISPLAY_NAMES = {"csf": "CSF", "gm": "grey matter", "wm": "white matter"}
_FALLBACK_COLORS = ((0.90, 0.80, 0.20), (0.55, 0.85, 0.45), (0.80, 0.40, 0.80), (0.40, 0.80, 0.80), (0.95, 0.60, 0.20))


def label_colors(
    label_names: Mapping[int, str], colors: Mapping[int, Sequence[int]] | None = None
) -> list[tuple[int, str, tuple[float, float, float]]]:
    """``(value, display name, rgb in 0..1)`` for each non-zero label, for the label map's colour table and segments.

    ``colors`` holds 0..255 RGB per label (the template's ``LABEL_COLORS``); labels without one get a fallback colour.

    Example:
        >>> label_colors({0: "background", 1: "csf", 4: "lateral_ventricles"}, {1: (60, 60, 60)})
        [(1, 'CSF', (0.235, 0.235, 0.235)), (4, 'lateral ventricles', (0.9, 0.8, 0.2))]
    """
    rows = []
    fallback = 0
    for value in sorted(label_names):
        if value == 0:
            continue
        raw = str(label_names[value])
        name = _DISPLAY_NAMES.get(raw.lower(), raw.replace("_", " "))
        if colors is not None and value in colors:
            rgb = cast("tuple[float, float, float]", tuple(round(float(c) / 255.0, 3) for c in colors[value]))
        else:
            rgb = _FALLBACK_COLORS[fallback % len(_FALLBACK_COLORS)]
            fallback += 1
        rows.append((int(value), name, rgb))
    return rows


def folding_from_jacobian(jacobian: np.ndarray) -> np.ndarray:
    """Voxels where the map folds (det J <= 0), as uint8 0/1, the same rule as the library's folding maps.

    Example:
        >>> folding_from_jacobian(np.array([1.0, 0.0, -0.2])).tolist()
        [0, 1, 1]
    """
    return (np.asarray(jacobian) <= 0).astype(np.uint8)


_DIVERGING = np.array([(59, 76, 192), (221, 221, 221), (180, 4, 38)], dtype=np.float64) / 255.0


def overlay_rgb(
    background: np.ndarray,
    jacobian: np.ndarray,
    window_level: WindowLevel,
    *,
    opacity: float = 0.5,
    background_percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Blend a grey background slice with det J on a blue-white-red map, as Slicer's slice view shows them.

    Both slices are 2D arrays of the same shape; returns uint8 RGB ``(*shape, 3)``. Used for the README picture.

    Example:
        >>> overlay_rgb(np.zeros((2, 2)), np.ones((2, 2)), WindowLevel(1.0, 1.0), opacity=1.0)[0, 0].tolist()
        [221, 221, 221]
    """
    background = np.asarray(background, dtype=np.float64)
    jacobian = np.asarray(jacobian, dtype=np.float64)
    if background.shape != jacobian.shape or background.ndim != 2:
        raise ValueError(f"expected two 2D slices of one shape, found {background.shape} and {jacobian.shape}")
    low, high = np.percentile(background, background_percentiles)
    grey = np.clip((background - low) / max(high - low, 1e-12), 0.0, 1.0)[..., None].repeat(3, axis=-1)
    t = np.clip((jacobian - window_level.minimum) / window_level.window, 0.0, 1.0) * 2.0
    lower = np.clip(t, 0.0, 1.0)[..., None]
    upper = np.clip(t - 1.0, 0.0, 1.0)[..., None]
    colour = np.where(t[..., None] <= 1.0, _DIVERGING[0] + lower * (_DIVERGING[1] - _DIVERGING[0]),
                      _DIVERGING[1] + upper * (_DIVERGING[2] - _DIVERGING[1]))
    rgb = (1.0 - opacity) * grey + opacity * colour
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _sample_nearest(volume: "Volume", points: np.ndarray) -> np.ndarray:
    """Values of a 3D volume at world points ``(..., 3)`` (nearest voxel; NaN outside)."""
    inverse = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64))
    ijk = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    shape = np.asarray(volume.array.shape[:3])
    inside = np.all((ijk >= 0) & (ijk < shape), axis=-1)
    out = np.full(points.shape[:-1], np.nan)
    i, j, k = (np.clip(ijk[..., a], 0, shape[a] - 1) for a in range(3))
    out[inside] = np.asarray(volume.array, dtype=np.float64)[i, j, k][inside]
    return out


def orthogonal_overlay(
    atlas: "Volume",
    jacobian: "Volume",
    *,
    window_level: WindowLevel | None = None,
    opacity: float = 0.5,
    pixel_mm: float = 1.0,
    center: Sequence[float] | None = None,
) -> np.ndarray:
    """Axial, coronal and sagittal slices through ``center`` (RAS mm; default the atlas centre), side by side, with det J
    blended over the atlas as Slicer shows it (radiological: patient right on the left). uint8 RGB.

    The two volumes may sit on different grids: both are sampled at the same world points (nearest voxel).
    """
    atlas_grid, n = np.asarray(atlas.affine, dtype=np.float64), np.asarray(atlas.array.shape[:3])
    corners = np.array([[a, b, c, 1.0] for a in (0, n[0] - 1) for b in (0, n[1] - 1) for c in (0, n[2] - 1)]) @ atlas_grid.T
    low, high = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    c = (low + high) / 2.0 if center is None else np.asarray(center, dtype=np.float64)
    if window_level is None:
        window_level = jacobian_window_level(np.asarray(jacobian.array))
    axes_r = np.arange(high[0], low[0] - 1e-6, -pixel_mm)  # right to left on screen: R decreasing
    axes_a = np.arange(high[1], low[1] - 1e-6, -pixel_mm)
    axes_s = np.arange(high[2], low[2] - 1e-6, -pixel_mm)
    views = [
        np.stack(np.broadcast_arrays(axes_r[None, :], axes_a[:, None], c[2]), axis=-1),  # axial: A up
        np.stack(np.broadcast_arrays(axes_r[None, :], c[1], axes_s[:, None]), axis=-1),  # coronal: S up
        np.stack(np.broadcast_arrays(c[0], axes_a[None, ::-1], axes_s[:, None]), axis=-1),  # sagittal: A right
    ]
    height = max(v.shape[0] for v in views)
    panels = []
    for points in views:
        background = np.nan_to_num(_sample_nearest(atlas, points), nan=0.0)
        det = np.nan_to_num(_sample_nearest(jacobian, points), nan=1.0)
        rgb = overlay_rgb(background, det, window_level, opacity=opacity)
        pad = np.zeros((height - rgb.shape[0], rgb.shape[1], 3), np.uint8)
        panels.append(np.concatenate([rgb, pad], axis=0))
    return np.concatenate(panels, axis=1)


# --------------------------------------------------------------------------------------------------------------------
# Condition sliders from a model card


class ConditionLike(Protocol):
    """The fields of ``DiffDefAtlasLib.api.ConditionSpec`` that the GUI reads."""

    name: str
    kind: str
    minimum: float | None
    maximum: float | None
    units: str
    choices: Sequence[str] | None
    default: Any


class ModelCardLike(Protocol):
    """The fields of ``DiffDefAtlasLib.api.ModelCard`` that the GUI reads."""

    name: str
    spatial_dims: int
    description: str
    conditions: Sequence[ConditionLike]


@dataclass(frozen=True)
class ConditionControl:
    """How the GUI shows one condition: a slider over ``[slider_minimum, slider_maximum]`` or a combo box of choices.

    ``minimum`` / ``maximum`` are the trained range. The slider range equals it unless extrapolation is allowed, so a
    value outside the trained range cannot be chosen by accident.
    """

    name: str
    label: str
    kind: str  # "continuous" or "categorical"
    units: str = ""
    minimum: float | None = None
    maximum: float | None = None
    slider_minimum: float | None = None
    slider_maximum: float | None = None
    single_step: float = 1.0
    decimals: int = 0
    choices: tuple[str, ...] = ()
    default: Any = None

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def trained_range_text(self) -> str:
        """E.g. ``"trained: 45–90 years"`` or ``"choices: F, M"``."""
        if self.is_categorical:
            return "choices: " + ", ".join(self.choices)
        units = f" {self.units}" if self.units else ""
        return f"trained: {format_number(self.minimum)}–{format_number(self.maximum)}{units}"

    def is_outside_trained_range(self, value: Any) -> bool:
        """True for a number outside ``[minimum, maximum]`` or a choice not in :attr:`choices`."""
        if self.is_categorical:
            return str(value) not in self.choices
        assert self.minimum is not None and self.maximum is not None
        value = float(value)
        return value < float(self.minimum) - 1e-9 or value > float(self.maximum) + 1e-9

    def clamp(self, value: Any) -> Any:
        """The nearest value the slider can show (categorical: the value if known, else the default)."""
        if self.is_categorical:
            return value if str(value) in self.choices else self.default
        assert self.slider_minimum is not None and self.slider_maximum is not None
        return min(float(self.slider_maximum), max(float(self.slider_minimum), float(value)))


def format_number(value: float | None) -> str:
    """Short text for a number: ``72`` not ``72.0``, ``0.25`` as is."""
    if value is None:
        return "?"
    value = float(value)
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:g}"


def nice_step(span: float, steps: int = 100) -> float:
    """A round slider step (1, 2 or 5 times a power of ten) giving about ``steps`` steps over ``span``.

    Example:
        >>> nice_step(45.0)
        0.5
    """
    if not span > 0:
        return 1.0
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10.0 * power


def condition_controls(card: ModelCardLike, allow_extrapolation: bool = False, margin: float = 0.25) -> list[ConditionControl]:
    """One :class:`ConditionControl` per condition of a model card, in card order.

    With ``allow_extrapolation`` the slider reaches ``margin`` times the trained span beyond each end (not below 0
    when the trained minimum is non-negative, since ages and volumes cannot be negative).

    Example:
        >>> from types import SimpleNamespace as S
        >>> card = S(name="m", spatial_dims=3, description="", conditions=[
        ...     S(name="age", kind="continuous", minimum=45, maximum=85, units="years", choices=None, default=65)])
        >>> c = condition_controls(card, allow_extrapolation=True)[0]
        >>> (c.slider_minimum, c.slider_maximum, c.single_step)
        (35.0, 95.0, 0.5)
    """
    controls = []
    for spec in card.conditions:
        units = str(getattr(spec, "units", "") or "")
        label = spec.name.replace("_", " ")
        if spec.kind not in KINDS:  # the kinds a model card accepts, nothing more
            raise DiffDefInputError(f"model card {card.name}: condition '{spec.name}' has kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
        if spec.kind == "categorical":
            choices = tuple(str(c) for c in (spec.choices or ()))
            if not choices:
                raise DiffDefInputError(f"model card {card.name}: categorical condition '{spec.name}' lists no choices")
            choice = str(spec.default) if spec.default is not None and str(spec.default) in choices else choices[0]
            controls.append(ConditionControl(spec.name, label, "categorical", units, choices=choices, default=choice))
            continue
        if spec.minimum is None or spec.maximum is None or not float(spec.maximum) > float(spec.minimum):
            raise DiffDefInputError(
                f"model card {card.name}: condition '{spec.name}' needs a trained range minimum < maximum, "
                f"found {spec.minimum}..{spec.maximum}"
            )
        lo, hi = float(spec.minimum), float(spec.maximum)
        span = hi - lo
        step = nice_step(span)
        decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
        slider_lo, slider_hi = lo, hi
        if allow_extrapolation:
            slider_lo, slider_hi = lo - margin * span, hi + margin * span
            if lo >= 0:
                slider_lo = max(0.0, slider_lo)
        default = float(spec.default) if spec.default is not None else (lo + hi) / 2.0
        default = min(hi, max(lo, default))
        controls.append(
            ConditionControl(
                spec.name, f"{label} ({units})" if units else label, "continuous", units, lo, hi,
                slider_lo, slider_hi, step, decimals, default=default,
            )
        )
    return controls


def default_conditions(controls: Sequence[ConditionControl]) -> dict[str, Any]:
    """The card's default value of every condition."""
    return {c.name: c.default for c in controls}


def conditions_outside_trained_range(controls: Sequence[ConditionControl], conditions: Mapping[str, Any]) -> list[str]:
    """Names of the set conditions whose value lies outside the trained range (for a warning next to the sliders)."""
    by_name = {c.name: c for c in controls}
    return [name for name, value in conditions.items() if name in by_name and by_name[name].is_outside_trained_range(value)]


def conditions_to_json(conditions: Mapping[str, Any]) -> str:
    """Conditions as stable JSON text (the parameter node stores them this way)."""
    return json.dumps({str(k): v for k, v in conditions.items()}, sort_keys=True)


def conditions_from_json(text: str) -> dict[str, Any]:
    """Inverse of :func:`conditions_to_json`; empty text gives ``{}``."""
    if not text or not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise DiffDefInputError(f"stored conditions must be a JSON object, found {text[:60]!r}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# Devices


def device_choice(text: str) -> str:
    """Map the device combo box text (``Auto`` / ``CPU`` / ``CUDA``) to the library's ``auto`` / ``cpu`` / ``cuda``."""
    value = str(text).strip().lower()
    if value.startswith("cuda") or value.startswith("gpu"):
        return "cuda"
    if value.startswith("cpu"):
        return "cpu"
    if value in ("", "auto", "automatic"):
        return "auto"
    raise DiffDefInputError(f"device must be Auto, CPU or CUDA, found {text!r}")


def describe_device(choice: str = "auto") -> str:
    """One line naming the device a choice resolves to, with free GPU memory for CUDA (imports torch).

    A CUDA choice without a usable GPU gives the library's explanation instead of raising, for a GUI label.

    Example:
        >>> describe_device("cpu")  # doctest: +SKIP
        'cpu (8 threads)'
    """
    import torch

    from .device import describe_device as device_name
    from .device import select_device

    choice = device_choice(choice)
    try:
        device = select_device(choice)
    except DiffDefInputError as error:
        return str(error)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return f"{device_name(device)}, {free / 1024**3:.1f} of {total / 1024**3:.1f} GiB free"
    text = f"{device_name(device)} ({torch.get_num_threads()} threads)"
    return text + ("; no CUDA GPU found" if choice == "auto" else "")


# --------------------------------------------------------------------------------------------------------------------
# Export


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "x"


def seed_with_effect(seed: Any, summary: Mapping[str, Any] | None) -> int | None:
    """``seed`` when it changed the atlas (a draw at temperature above 0), else ``None``: at temperature 0 every
    seed gives the same atlas, so names leave it out.

    Example:
        >>> seed_with_effect(3, {"temperature": 0.0}), seed_with_effect(3, {"temperature": 1.0})
        (None, 3)
    """
    try:
        temperature = float((summary or {}).get("temperature") or 0.0)
        return int(seed) if temperature > 0 else None
    except (TypeError, ValueError):
        return None


def export_stem(model: str, conditions: Mapping[str, Any], seed: int | None = None) -> str:
    """File-name stem naming an atlas by model, conditions (sorted) and, when it has an effect, the seed (see
    :func:`seed_with_effect`); safe on every file system.

    Example:
        >>> export_stem("brain3d", {"sex": "F", "age": 72.0}), export_stem("brain3d", {"age": 72.0}, seed=3)
        ('brain3d_age-72_sex-F', 'brain3d_age-72_seed-3')
    """
    parts = [_slug(model)]
    for name in sorted(conditions):
        value = conditions[name]
        text = format_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        parts.append(f"{_slug(name)}-{_slug(text)}")
    if seed is not None:
        parts.append(f"seed-{int(seed)}")
    return "_".join(parts)



class ExportConflict(DiffDefInputError):
    """Files of the names an export would write exist already; ``paths`` lists them (the caller may ask the user)."""

    def __init__(self, paths: list[Path]):
        names = ", ".join(p.name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        super().__init__(f"{paths[0].parent}: {names} exist already; export again with overwrite to replace them")
        self.paths = list(paths)


def export_paths(folder: str | Path, stem: str) -> dict[str, Path]:
    """Where :func:`export_atlas` writes each item."""
    folder = Path(folder)
    return {key: folder / f"{stem}{suffix}" for key, suffix in EXPORT_SUFFIXES.items()}


def export_atlas(
    folder: str | Path,
    stem: str,
    *,
    atlas: Volume,
    labels: Volume | None = None,
    displacement: np.ndarray | None = None,
    grid=None,
    jacobian: Volume | None = None,
    summary: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the atlas, its labels, deformation (NIfTI intent 1006, RAS mm), Jacobian, folding and summary.

    Every file is written atomically; the folding map is det J <= 0 of the exported Jacobian. Returns the paths
    written, keyed as :data:`EXPORT_SUFFIXES`. The folder is the user's: a file of the same name already there is
    replaced only with ``overwrite`` (the Slicer module asks first); without it :class:`ExportConflict` lists them
    and nothing is written.

    Example:
        >>> export_atlas("out", "brain3d_age-72_sex-F_seed-0", atlas=volume)  # doctest: +SKIP
        {'atlas': PosixPath('out/brain3d_age-72_sex-F_seed-0_atlas.nii.gz')}
    """
    from .atomic import write_text_atomic
    from .imageio import Volume, write_image
    from .fieldio import save_displacement_nifti

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DiffDefInputError(f"{folder}: expected a folder to export into, found a file")
    if displacement is not None and grid is None:
        raise ValueError("exporting a displacement needs its grid")
    paths = export_paths(folder, stem)
    wanted = {"atlas": True, "labels": labels is not None, "displacement": displacement is not None,
              "jacobian": jacobian is not None, "folding": jacobian is not None, "summary": summary is not None}
    existing = [paths[key] for key, used in wanted.items() if used and paths[key].exists()]
    if existing and not overwrite:
        raise ExportConflict(existing)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"atlas": write_image(atlas, paths["atlas"])}
    if labels is not None:
        written["labels"] = write_image(Volume(np.asarray(labels.array).astype(np.uint8), labels.affine), paths["labels"])
    if displacement is not None:
        written["displacement"] = save_displacement_nifti(np.asarray(displacement, dtype=np.float32), grid, paths["displacement"])
    if jacobian is not None:
        written["jacobian"] = write_image(Volume(np.asarray(jacobian.array, dtype=np.float32), jacobian.affine), paths["jacobian"])
        written["folding"] = write_image(Volume(folding_from_jacobian(jacobian.array), jacobian.affine), paths["folding"])
    if summary is not None:
        written["summary"] = write_text_atomic(paths["summary"], json.dumps(dict(summary), indent=2, default=str) + "\n")
    return written
