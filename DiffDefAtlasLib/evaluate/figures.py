"""Figures of an evaluation: atlases across ages per method, Jacobian maps, ventricle size against age.

matplotlib is used when installed; otherwise the atlas and Jacobian montages are drawn with pillow (a dependency)
and the trend plot is skipped.

Example:
    >>> paths = write_figures(result, "out")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import EvaluationResult


def _display(array: np.ndarray) -> np.ndarray:
    """A slice rotated for display (first axis left-right, second axis bottom-top)."""
    return np.rot90(np.asarray(array))


def _montage_grid(result: EvaluationResult, sex: str | None) -> tuple[list[str], list[str]]:
    methods = list(dict.fromkeys(m for m, _ in result.slices))
    labels = list(dict.fromkeys(c for _, c in result.slices if sex is None or f"sex={sex}" in c))
    return methods, labels


def _pillow_montage(result: EvaluationResult, key: str, path: Path, sex: str | None, low: float, high: float) -> Path:
    from PIL import Image

    methods, labels = _montage_grid(result, sex)
    tiles = [[_display(result.slices[(m, c)][key]) for c in labels] for m in methods]
    h, w = tiles[0][0].shape
    canvas = np.zeros((h * len(methods), w * len(labels)), dtype=np.float64)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            canvas[i * h : (i + 1) * h, j * w : (j + 1) * w] = tile
    scaled = np.clip((canvas - low) / (high - low), 0, 1)
    Image.fromarray((255 * scaled).astype(np.uint8)).save(path)
    return path


def montage(result: EvaluationResult, key: str, path: str | Path, sex: str | None = "F") -> Path:
    """One row per method, one column per condition (of ``sex``): the atlas mid slices, or det J maps for ``key="jacobian"``."""
    path = Path(path)
    methods, labels = _montage_grid(result, sex)
    is_jacobian = key == "jacobian"
    if is_jacobian:
        low, high = 0.5, 1.5
    else:
        values = np.concatenate([result.slices[(m, c)][key].ravel() for m in methods for c in labels])
        low, high = 0.0, float(np.percentile(values, 99.5)) or 1.0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pillow_montage(result, key, path, sex, low, high)
    fig, axes = plt.subplots(len(methods), len(labels), figsize=(1.9 * len(labels) + 0.8, 2.1 * len(methods)), squeeze=False)
    image = None
    for i, method in enumerate(methods):
        for j, label in enumerate(labels):
            ax = axes[i, j]
            image = ax.imshow(_display(result.slices[(method, label)][key]), cmap="RdBu_r" if is_jacobian else "gray", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(method, fontsize=8)
    if is_jacobian and image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="det J")
    fig.suptitle(f"{result.name}: {'Jacobian determinant' if is_jacobian else 'atlas'} (mid axial slice)", fontsize=10)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def ventricle_trend(result: EvaluationResult, path: str | Path, size_key: str) -> Path | None:
    """Ventricle size against age: each method's atlases (lines, per sex) and the data (points)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    data = result.data_points
    units = data.get("units", "")
    for ax, sex in zip(axes, ("F", "M")):
        if data.get("age"):
            keep = [i for i, s in enumerate(data["sex"]) if s == sex]
            ax.scatter([data["age"][i] for i in keep], [data["ventricle"][i] for i in keep], s=10, color="0.6", label="data (subjects)")
            if len(keep) > 2:
                x = np.array([data["age"][i] for i in keep])
                fit = np.polyfit(x, [data["ventricle"][i] for i in keep], 1)
                xs = np.linspace(x.min(), x.max(), 2)
                ax.plot(xs, np.polyval(fit, xs), color="0.3", linestyle=":", label="data trend")
        for method in dict.fromkeys(r["method"] for r in result.rows):
            rows = sorted((r for r in result.rows if r["method"] == method and r.get("sex") == sex), key=lambda r: r["age"])
            if rows:
                ax.plot([r["age"] for r in rows], [r[size_key] for r in rows], marker="o", label=method)
        ax.set_title(f"sex {sex}")
        ax.set_xlabel("age (years)")
    axes[0].set_ylabel(f"lateral ventricles ({units})")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{result.name}: ventricle size against age, atlases and data", fontsize=10)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def write_figures(result: EvaluationResult, out: str | Path, size_key: str, prefix: str = "") -> list[Path]:
    """Atlas and Jacobian montages (per sex present) and the ventricle trend plot; returns the files written."""
    out = Path(out)
    sexes = sorted({r["sex"] for r in result.rows if "sex" in r}) or [None]
    paths: list[Path] = []
    for sex in sexes:
        suffix = f"_{sex}" if sex else ""
        paths.append(montage(result, "atlas", out / f"{prefix}atlases{suffix}.png", sex))
        paths.append(montage(result, "jacobian", out / f"{prefix}jacobians{suffix}.png", sex))
    trend = ventricle_trend(result, out / f"{prefix}ventricles_vs_age.png", size_key)
    if trend is not None:
        paths.append(trend)
    return paths
