"""Display choices of the Slicer module: colour tables, window/level of the Jacobian and magnitude overlays, label
colours and the folding mask.

Only numpy at file scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, cast

import numpy as np

#: The Jacobian's colour table: a node the module makes (``OverlayDisplay.jacobianColorNode``) from
#: :func:`volume_change_colour_table`, one per scene. As a singleton its node ID is the class name plus this tag
#: (``vtkMRMLScene::GenerateUniqueID``), so a saved scene refers to it by a fixed ID.
JACOBIAN_COLOR_SINGLETON_TAG = "DiffDefAtlasVolumeChange"
JACOBIAN_COLOR_NODE_ID = "vtkMRMLColorTableNode" + JACOBIAN_COLOR_SINGLETON_TAG
JACOBIAN_COLOR_NODE_NAME = "DiffDefAtlas volume change"
#: What the Jacobian colours say, in words (the legend title, the tooltips and the documentation say the same).
JACOBIAN_COLOR_WORDS = (
    "det J of the stored map; red (det J < 1): larger in the atlas than in the template; blue: smaller"
)
#: The colour legend's title over the Jacobian (one short line per part, as a legend has little room).
JACOBIAN_LEGEND_TITLE = "det J of the stored map\nred (det J < 1):\nlarger in the atlas\nblue: smaller"
#: The same for a registration's Jacobian (det J of the atlas -> scan map): the scan takes the template's place.
REGISTRATION_JACOBIAN_LEGEND_TITLE = "det J of the stored map\nred (det J < 1):\nlarger in the atlas\nthan in the scan\nblue: smaller"
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


#: Colour stops of the Jacobian's table, ``(position on the window 0..1, RGB 0..1)``: the low end (det J < 1: the
#: template's anatomy is larger in the atlas, as tensor-based morphometry shows growth) red, det J = 1 white, the high
#: end (smaller in the atlas) blue. The ends are the preview pictures' growth and shrinkage colours
#: (``DiffDefAtlasLib.generate.preview.GROWTH`` / ``SHRINKAGE``).
VOLUME_CHANGE_STOPS = (
    (0.0, (1.0, 0.12, 0.08)),
    (0.5, (1.0, 1.0, 1.0)),
    (1.0, (0.1, 0.4, 1.0)),
)


def volume_change_colour_table(n: int = 256) -> np.ndarray:
    """RGBA rows (``(n, 4)``, 0..1, opaque) of the Jacobian's colour table, from the lowest det J of the window to the
    highest: red below 1 (larger in the atlas than in the template), white at 1, blue above 1 (smaller).

    Slicer maps the window of det J (:func:`jacobian_window_level`, centred on 1) onto the rows in order, so row 0 is
    det J = 1 - half width and the last row det J = 1 + half width.

    Example:
        >>> table = volume_change_colour_table(5)
        >>> table[0].tolist(), table[2].tolist(), table[4].tolist()
        ([1.0, 0.12, 0.08, 1.0], [1.0, 1.0, 1.0, 1.0], [0.1, 0.4, 1.0, 1.0])
    """
    if int(n) < 3:
        raise ValueError(f"a diverging table needs at least 3 colours, asked for {n}")
    positions = np.array([stop[0] for stop in VOLUME_CHANGE_STOPS])
    colours = np.array([stop[1] for stop in VOLUME_CHANGE_STOPS])
    t = np.linspace(0.0, 1.0, int(n))
    rgb = np.stack([np.interp(t, positions, colours[:, c]) for c in range(3)], axis=1)
    return np.concatenate([rgb, np.ones((int(n), 1))], axis=1)


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
