"""Reporting helpers for the registration engine: the λ-map figure and tissue-class Dice for 2D slices.

The figure is drawn with numpy and pillow only (no matplotlib), so its pixel size is fixed by the image shape and
``zoom``: rows are the fixed image, the warped scan, λ(x) and log det J; columns are the axial, coronal and sagittal
centre slices (one column in 2D), then a colour bar column.

Example:
    >>> import numpy as np
    >>> from DiffDefAtlasLib.imageio import Volume
    >>> v = Volume(np.random.rand(8, 10, 6).astype(np.float32), np.eye(4))
    >>> lambda_figure_size(v.array.shape, zoom=2)
    (188, 102)
    >>> kmeans_tissue_labels(np.array([0.0, 0.2, 0.21, 0.5, 0.52, 0.9, 0.88]), np.array([0, 1, 1, 1, 1, 1, 1])).tolist()
    [0, 1, 1, 2, 2, 3, 3]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..imageio import Volume
from ..imaging.resampling import resample

#: Pixel widths of the row-title column, the colour bar column, the gap between panels, and the title band's height.
TITLE_WIDTH = 70
COLOURBAR_WIDTH = 60
GAP = 2
HEADER = 14
ROWS = ("fixed", "warped", "lambda", "log detJ - median")

# matplotlib's viridis at 9 evenly spaced points (RGB 0-1), interpolated linearly.
_VIRIDIS = np.array([
    [0.267, 0.005, 0.329], [0.283, 0.141, 0.458], [0.254, 0.265, 0.530], [0.207, 0.372, 0.553], [0.164, 0.471, 0.558],
    [0.128, 0.567, 0.551], [0.135, 0.659, 0.518], [0.267, 0.749, 0.441], [0.478, 0.821, 0.318], [0.741, 0.873, 0.150],
    [0.993, 0.906, 0.144],
])


def _viridis(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(t).astype(int).clip(0, len(_VIRIDIS) - 2)
    w = (t - low)[..., None]
    return _VIRIDIS[low] * (1 - w) + _VIRIDIS[low + 1] * w


def _diverging(t: np.ndarray) -> np.ndarray:
    """Blue (t = 0) - white (0.5) - red (1)."""
    t = np.clip(t, 0.0, 1.0)[..., None]
    blue, white, red = np.array([0.02, 0.19, 0.38]), np.ones(3), np.array([0.40, 0.0, 0.05])
    return np.where(t < 0.5, blue + (white - blue) * (t / 0.5), white + (red - white) * ((t - 0.5) / 0.5))


def _gray(t: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(t, 0.0, 1.0)[..., None], 3, axis=-1)


def _views(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal centre slices of ``[i, j, k]`` (RAS-like) as images with row 0 on top (one in 2D)."""
    if array.ndim == 2:
        return [np.flipud(array.T)]
    i, j, k = (s // 2 for s in array.shape)
    return [np.flipud(array[:, :, k].T), np.flipud(array[:, j, :].T), np.flipud(array[i, :, :].T)]


def _panel_sizes(shape: tuple[int, ...], zoom: int) -> tuple[list[int], int]:
    views = _views(np.zeros(shape, dtype=np.uint8))
    return [zoom * v.shape[1] for v in views], max(zoom * v.shape[0] for v in views)


def lambda_figure_size(shape: tuple[int, ...], zoom: int = 3) -> tuple[int, int]:
    """``(width, height)`` in pixels of :func:`lambda_figure` for a fixed image of ``shape``.

    Width: the title column, one panel per view (``zoom`` x the slice width) with a gap after each, the colour bars;
    height: the title band, then four rows of ``zoom`` x the tallest slice, with a gap after each.
    """
    widths, height = _panel_sizes(tuple(shape), zoom)
    return TITLE_WIDTH + sum(w + GAP for w in widths) + COLOURBAR_WIDTH, HEADER + len(ROWS) * (height + GAP)


def _on_grid(volume: Volume, like: Volume) -> np.ndarray:
    """``volume`` sampled on ``like``'s grid (linear), or its array when the grids already match."""
    if volume.array.shape == like.array.shape and np.allclose(volume.affine, like.affine, atol=1e-4):
        return np.asarray(volume.array, dtype=np.float32)

    return resample(volume, like.grid)[0, 0].numpy()


def _colour_bar(height: int, colours, low: float, high: float, label: str):
    from PIL import Image, ImageDraw

    bar = np.linspace(1.0, 0.0, max(height - 24, 8))[:, None].repeat(12, axis=1)
    picture = Image.new("RGB", (COLOURBAR_WIDTH, height), (255, 255, 255))
    picture.paste(Image.fromarray((255 * colours(bar)).astype(np.uint8)), (4, 12))
    draw = ImageDraw.Draw(picture)
    draw.text((18, 8), f"{high:.2f}", fill=(0, 0, 0))
    draw.text((18, 12 + bar.shape[0] - 8), f"{low:.2f}", fill=(0, 0, 0))
    draw.text((2, 0), label, fill=(0, 0, 0))
    return picture


def lambda_figure(
    fixed: Volume,
    warped: Volume,
    lambda_map: Volume,
    jacobian: Volume,
    path: str | Path,
    *,
    mask: Volume | None = None,
    zoom: int = 3,
    title: str | None = None,
) -> Path:
    """Write a PNG with the centre slices of the fixed image, the warped scan, λ(x) and log det J, with colour bars.

    ``warped``, ``jacobian`` and ``mask`` are on the fixed grid (as :func:`register_to_atlas` returns them); ``lambda_map``
    may be on the network's working grid and is resampled onto the fixed grid when the grids differ. λ is shown
    between its 1st and 99th percentile inside ``mask`` (or everywhere). log det J is shown minus its median inside
    ``mask`` (the affine's global scaling only adds a constant), symmetrically up to the 99th percentile of that
    magnitude; det J <= 0 is drawn yellow. Outside ``mask`` both maps are dimmed. Written atomically; returns ``path``.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    shape = fixed.array.shape
    inside = np.ones(shape, bool) if mask is None else _on_grid(mask, fixed) > 0.5
    image = np.asarray(fixed.array, dtype=np.float32)
    moved = _on_grid(warped, fixed)
    lam = _on_grid(lambda_map, fixed)
    det = _on_grid(jacobian, fixed)
    log_det = np.log(np.clip(det, 1e-3, None))

    def percentile(values: np.ndarray, q, fallback):
        chosen = values[inside] if inside.any() else values.ravel()
        return np.percentile(chosen, q) if chosen.size else fallback

    lo_i, hi_i = percentile(image, [1, 99.5], (0.0, 1.0))
    lo_w, hi_w = percentile(moved, [1, 99.5], (0.0, 1.0))
    lo_l, hi_l = (float(v) for v in percentile(lam, [1, 99], (0.0, 1.0)))
    if hi_l - lo_l < 1e-6:
        lo_l, hi_l = lo_l - 0.05, hi_l + 0.05
    log_det = log_det - float(percentile(log_det, 50, 0.0))
    limit = max(float(percentile(np.abs(log_det), 99, 0.5)), 0.05)

    masks = _views(inside.astype(np.float32))
    rows = [
        [_gray((v - lo_i) / max(hi_i - lo_i, 1e-8)) for v in _views(image)],
        [_gray((v - lo_w) / max(hi_w - lo_w, 1e-8)) for v in _views(moved)],
        [],
        [],
    ]
    for v, m in zip(_views(lam), masks):
        rgb = _viridis((v - lo_l) / (hi_l - lo_l))
        rgb[m < 0.5] *= 0.35  # outside the mask: dimmed
        rows[2].append(rgb)
    for v, d, m in zip(_views(log_det), _views(det), masks):
        rgb = _diverging(0.5 + 0.5 * v / limit)
        rgb[d <= 0] = (1.0, 1.0, 0.0)
        rgb[m < 0.5] *= 0.35
        rows[3].append(rgb)

    widths, height = _panel_sizes(shape, zoom)
    size = lambda_figure_size(shape, zoom)
    sheet = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    bars = {2: (_viridis, lo_l, hi_l, "lambda"), 3: (_diverging, -limit, limit, "log detJ")}
    for r, (name, panels) in enumerate(zip(ROWS, rows)):
        top = HEADER + r * (height + GAP)
        draw.text((4, top + height // 2 - 6), name.replace(" - ", "\n- "), fill=(0, 0, 0))
        left = TITLE_WIDTH
        for panel, width in zip(panels, widths):
            tile = Image.fromarray((255 * np.clip(panel, 0, 1)).astype(np.uint8)).resize((panel.shape[1] * zoom, panel.shape[0] * zoom), Image.NEAREST)  # type: ignore[attr-defined]  # Pillow defines it at runtime only; Image.Resampling needs Pillow >= 9.1
            sheet.paste(tile, (left, top + (height - tile.height) // 2))
            left += width + GAP
        if r in bars:
            colours, low, high, label = bars[r]
            sheet.paste(_colour_bar(height, colours, low, high, label), (left, top))
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def kmeans_tissue_labels(image: np.ndarray, mask: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Tissue classes of a skull-stripped T1 slice from its own intensities: 3-class k-means inside ``mask``.

    Returns uint8 labels 0 background, 1 CSF (darkest), 2 GM, 3 WM (brightest): the rule that labels the OASIS axial
    template (:func:`DiffDefAtlasLib.population.oasis2d.derive_labels`, without its ventricle step). An intensity-derived
    proxy segmentation, not a manual or FSL one.
    """
    image = np.asarray(image, dtype=np.float64)
    inside = np.asarray(mask).astype(bool)
    values = image[inside]
    if values.size == 0:
        return np.zeros(image.shape, np.uint8)
    centres = np.percentile(values, [10.0, 50.0, 90.0])
    for _ in range(iterations):
        assignment = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array([values[assignment == c].mean() if np.any(assignment == c) else centres[c] for c in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    centres = np.sort(centres)
    classes = np.argmin(np.abs(image[..., None] - centres), axis=-1) + 1
    return np.where(inside, classes, 0).astype(np.uint8)
