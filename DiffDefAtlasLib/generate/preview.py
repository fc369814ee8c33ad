"""Preview images built with numpy and PIL: orthogonal slices with the volume change, montages and animated GIFs.

Slices are shown in neurological orientation (patient left on the image left), superior or anterior at the top.
The overlay is the template-to-atlas volume change, log(1/det J) with det J of the stored map x -> x + u(x):
red where a structure is larger in the atlas than in the template, blue where it is smaller. Its opacity grows with
the change (none at no change, at most ``MAX_ALPHA`` at the ends of the scale, volume ratios 1/1.5 to 1.5 by
default), so the anatomy stays visible; the background outside the head is not covered; folding (det J <= 0) is
yellow. Each picture carries a colour bar and a legend in words below the slices.

Example:
    >>> import numpy as np
    >>> from DiffDefAtlasLib.imageio import Volume
    >>> image = slices_with_jacobian(Volume(np.random.rand(8, 9, 10).astype(np.float32), np.eye(4)))
    >>> image.mode
    'RGB'
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from ..imageio import Volume

#: Volume ratio (atlas / template) at the ends of the colour scale; larger changes are clipped.
MAX_RATIO = 1.5
#: Opacity of the colour at the ends of the scale (zero at no change).
MAX_ALPHA = 0.45
GROWTH = (1.0, 0.12, 0.08)
SHRINKAGE = (0.1, 0.4, 1.0)
FOLDING = (1.0, 1.0, 0.0)
LEGEND_WORDS = "red: larger in the atlas than in the template; blue: smaller; yellow: folding (det J <= 0)"
SCALE_WORDS = "volume in the atlas / in the template"
_GAP = 2  # columns after each panel
_PAD = 4
_MIN_WIDTH = 320
_BAR_HEIGHT = 10
_WHITE = (255, 255, 255)


def _display_slices(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal centre slices of a 3D array ``[i, j, k]`` (RAS), as 2D images (row 0 on top)."""
    if array.ndim == 2:
        return [np.flipud(array.T)]
    i, j, k = (s // 2 for s in array.shape)
    return [np.flipud(array[:, :, k].T), np.flipud(array[:, j, :].T), np.flipud(array[i, :, :].T)]


def _to_gray(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = np.clip((image - low) / max(high - low, 1e-8), 0.0, 1.0)
    return np.repeat(scaled[..., None], 3, axis=-1)


def volume_change(jacobian: np.ndarray) -> np.ndarray:
    """log(1/det J): the template-to-atlas volume change (> 0 growth, < 0 shrinkage); NaN where det J <= 0."""
    det = np.asarray(jacobian, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(det > 0, -np.log(np.where(det > 0, det, 1.0)), np.nan)


def _overlay(change: np.ndarray, max_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour and opacity for log volume changes (NaN: folding)."""
    folded = np.isnan(change)
    strength = np.clip(np.nan_to_num(change) / np.log(max_ratio), -1.0, 1.0)
    alpha = MAX_ALPHA * np.abs(strength)
    colour = np.where((strength > 0)[..., None], GROWTH, SHRINKAGE)
    colour[folded] = FOLDING
    alpha[folded] = 0.8
    return colour, alpha[..., None]


def _head(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels inside the head: above 5 % of the intensity range, holes (dark ventricles) filled."""
    from scipy.ndimage import binary_fill_holes

    return np.asarray(binary_fill_holes(image > low + 0.05 * (high - low)), dtype=bool)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}".rstrip("0").rstrip(".")


def _tick_ratios(max_ratio: float) -> list[float]:
    upper = [r for r in (1.25, 2.0, 4.0, 8.0) if r < 0.95 * max_ratio] + [max_ratio]
    return [1 / r for r in reversed(upper)] + [1.0] + upper


def ratio_ticks(max_ratio: float = MAX_RATIO) -> list[str]:
    """The volume ratios (atlas / template) written under the colour bar, left to right."""
    return [_ratio_text(r) for r in _tick_ratios(max_ratio)]


def colour_bar(width: int, height: int = _BAR_HEIGHT, max_ratio: float = MAX_RATIO):
    """A PIL image of the scale as the slices show it over mid grey: ratio 1/max_ratio (left) to max_ratio (right)."""
    from PIL import Image

    half = max(width // 2, 1)
    strength = np.clip((np.arange(width) - width // 2) / half, -1.0, 1.0)
    colour, alpha = _overlay(strength * np.log(max_ratio), max_ratio)
    row = 0.5 * (1 - alpha) + colour * alpha
    return Image.fromarray(np.repeat(np.rint(row * 255).astype(np.uint8)[None], height, axis=0))


def legend_strip(width: int, label: str | None = None, *, max_ratio: float = MAX_RATIO, overlay: bool = True):
    """The strip below the slices: the label, and with ``overlay`` the colour bar, its ratios and the legend."""
    from PIL import Image, ImageDraw

    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = int(font.getbbox("Ag")[3]) + 3
    inner = width - 2 * _PAD
    texts = [(_wrap(probe, label, font, inner), (255, 255, 0))] if label else []
    bar_width = min(256, inner)
    if overlay:
        texts.append((_wrap(probe, LEGEND_WORDS, font, inner), _WHITE))
    lines = sum(len(t) for t, _ in texts)
    height = _PAD + lines * line + (_BAR_HEIGHT + 2 * line + 2 if overlay else 0) + _PAD
    strip = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(strip)
    y = _PAD
    if label:
        for text in texts[0][0]:
            draw.text((_PAD, y), text, fill=texts[0][1], font=font)
            y += line
    if overlay:
        strip.paste(colour_bar(bar_width, _BAR_HEIGHT, max_ratio), (_PAD, y))
        for ratio in _tick_ratios(max_ratio):
            x = _PAD + bar_width // 2 + np.log(ratio) / np.log(max_ratio) * (bar_width // 2)
            text = _ratio_text(ratio)
            x = min(max(x - draw.textlength(text, font=font) / 2, 0), width - draw.textlength(text, font=font))
            draw.text((x, y + _BAR_HEIGHT + 1), text, fill=_WHITE, font=font)
        y += _BAR_HEIGHT + line + 1
        draw.text((_PAD, y), SCALE_WORDS, fill=_WHITE, font=font)
        y += line + 1
        for text in texts[-1][0]:
            draw.text((_PAD, y), text, fill=_WHITE, font=font)
            y += line
    return strip


def slices_with_jacobian(atlas: Volume, jacobian: Volume | None = None, label: str | None = None, *, max_ratio: float = MAX_RATIO):
    """A PIL RGB image: the centre slices of ``atlas`` side by side with the volume change of ``jacobian``
    (det J of the stored map) over them, and below them the label, colour bar and legend."""
    from PIL import Image

    array = np.asarray(atlas.array, dtype=np.float32)
    low, high = (float(v) for v in np.percentile(array, [1, 99.5])) if array.size else (0.0, 1.0)
    panels = []
    change = _display_slices(volume_change(jacobian.array)) if jacobian is not None else None
    for n, image in enumerate(_display_slices(array)):
        rgb = _to_gray(image, low, high)
        if change is not None:
            colour, alpha = _overlay(change[n], max_ratio)
            alpha = alpha * _head(image, low, high)[..., None]  # the background stays uncovered
            rgb = rgb * (1 - alpha) + colour * alpha
        panels.append(np.rint(rgb * 255).astype(np.uint8))
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, _GAP), (0, 0))) for p in panels]
    row = np.concatenate(padded, axis=1)
    if row.shape[1] < _MIN_WIDTH and (change is not None or label):
        row = np.pad(row, ((0, 0), (0, _MIN_WIDTH - row.shape[1]), (0, 0)))
    if change is None and not label:
        return Image.fromarray(row)
    strip = np.asarray(legend_strip(row.shape[1], label, max_ratio=max_ratio, overlay=change is not None))
    return Image.fromarray(np.concatenate([row, strip], axis=0))


def save_png(picture, path: str | Path) -> Path:
    """Write a PIL image atomically as PNG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def montage(pictures: Sequence, columns: int = 1):
    """Stack PIL images in a grid (``columns`` per row), for the sweep montage; each keeps its own legend."""
    from PIL import Image

    columns = max(1, columns)
    width = max(p.width for p in pictures)
    height = max(p.height for p in pictures)
    rows = (len(pictures) + columns - 1) // columns
    sheet = Image.new("RGB", (width * columns, height * rows))
    for n, picture in enumerate(pictures):
        sheet.paste(picture, ((n % columns) * width, (n // columns) * height))
    return sheet


def save_gif(pictures: Sequence, path: str | Path, milliseconds: int = 300) -> Path:
    """An animated GIF (looping, bouncing back and forth) written atomically."""
    path = Path(path)
    frames = list(pictures) + list(pictures)[-2:0:-1]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=milliseconds, loop=0)
    return path
