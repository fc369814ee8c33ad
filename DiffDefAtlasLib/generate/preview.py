"""Preview images built with numpy and PIL: orthogonal slices with a Jacobian overlay, montages and animated GIFs.

Slices are shown in neurological orientation (patient left on the image left), superior or anterior at the top.
The overlay (inside the head) colours expansion (det J > 1) red and contraction (det J < 1) blue, strongest at
``|log2 det J| >= 0.5``; folding (det J <= 0) is yellow.

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


def _display_slices(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal centre slices of a 3D array ``[i, j, k]`` (RAS), as 2D images (row 0 on top)."""
    if array.ndim == 2:
        return [np.flipud(array.T)]
    i, j, k = (s // 2 for s in array.shape)
    return [np.flipud(array[:, :, k].T), np.flipud(array[:, j, :].T), np.flipud(array[i, :, :].T)]


def _to_gray(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = np.clip((image - low) / max(high - low, 1e-8), 0.0, 1.0)
    return np.repeat(scaled[..., None], 3, axis=-1)


def _jacobian_colour(jac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    log = np.log2(np.clip(jac, 1e-3, None))
    alpha = np.clip(np.abs(log) / 0.5, 0.0, 1.0)[..., None] * 0.6
    colour = np.zeros((*jac.shape, 3))
    colour[..., 0] = log > 0
    colour[..., 2] = log < 0
    folded = jac <= 0
    colour[folded] = (1.0, 1.0, 0.0)
    alpha[folded] = 1.0
    return colour, alpha


def slices_with_jacobian(atlas: Volume, jacobian: Volume | None = None, label: str | None = None):
    """A PIL RGB image: the orthogonal centre slices of ``atlas`` side by side, with the Jacobian overlay."""
    from PIL import Image, ImageDraw

    array = np.asarray(atlas.array, dtype=np.float32)
    low, high = np.percentile(array, [1, 99.5]) if array.size else (0.0, 1.0)
    panels = []
    jac_slices = _display_slices(np.asarray(jacobian.array, dtype=np.float32)) if jacobian is not None else None
    for n, image in enumerate(_display_slices(array)):
        rgb = _to_gray(image, float(low), float(high))
        if jac_slices is not None:
            colour, alpha = _jacobian_colour(jac_slices[n])
            alpha = alpha * (image > low + 0.05 * (high - low))[..., None]  # overlay inside the head only
            rgb = rgb * (1 - alpha) + colour * alpha
        panels.append((rgb * 255).astype(np.uint8))
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 2), (0, 0))) for p in panels]
    picture = Image.fromarray(np.concatenate(padded, axis=1))
    if label:
        ImageDraw.Draw(picture).text((3, 2), label, fill=(255, 255, 0))
    return picture


def save_png(picture, path: str | Path) -> Path:
    """Write a PIL image atomically as PNG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def montage(pictures: Sequence, columns: int = 1):
    """Stack PIL images in a grid (``columns`` per row), for the sweep montage."""
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
