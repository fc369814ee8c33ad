"""Display choices of the Slicer module: colour tables, window/level of the Jacobian and magnitude overlays, label
colours, the folding mask, and the PNG overlays of previews.

Only numpy at file scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence, cast

import numpy as np

if TYPE_CHECKING:  # imageio pulls in the spatial package (torch); the module needs this file before torch exists
    from ..imageio import Volume


#: Slicer's diverging blue-white-red colour table node (a built-in node ID).
JACOBIAN_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: Colour table node for the displacement magnitude (built-in).
MAGNITUDE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileViridis.txt"


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
