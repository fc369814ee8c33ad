"""A registration checks its own result: similarity in the brain, folding and brain overlap against thresholds.

A result that fails these checks is never handed back as a success: :func:`check_quality` raises
:class:`RegistrationQualityError` (a :class:`~DiffDefAtlasLib.errors.QualityCheckError`, so the command line exits
with status 2) whose one-line message names the figure and its threshold.

Figures measured with the bundled network and ``diffdef-atlas register`` against the 1 mm template:

- a BrainWeb T1-like brain turned 10 degrees and shifted 25 mm: affine-only NCC 0.60, final 0.73, coverage 1.00,
  Dice 0.96; its full head (top-anchored path): 0.59, 0.72, coverage 1.00;
- the real skull-stripped IXI259 T1: 0.58, 0.75, coverage 1.00, Dice 0.96;
- a SynthSeg brain with random per-structure contrasts (the lowest correct case seen): 0.27, 0.41, 0.90, 0.92;
- a BrainWeb head with a neck under the old moments-only affine: brain NCC -0.08, its translation 77 mm off in z.

The thresholds sit below every correct case and above the failures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import QualityCheckError


class RegistrationQualityError(QualityCheckError):
    """The registration ran but its own quality checks say the result is wrong; ``figures`` holds what was measured."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a registration must meet.

    ``min_affine_ncc``: Pearson correlation in the brain after the affine alone (working grid); a misplaced affine
    scores near 0. ``min_ncc``: the same after the deformable stage (atlas grid). ``max_folding``: share of brain
    voxels with det J <= 0. ``min_brain_coverage``: share of the atlas brain covered by the scan's foreground.
    ``min_brain_dice``: Dice of the scan's own brain (skull-stripped scans) with the atlas brain.
    """

    min_affine_ncc: float = 0.15
    min_ncc: float = 0.3
    max_folding: float = 0.01
    min_brain_coverage: float = 0.85
    min_brain_dice: float = 0.75

    def as_dict(self) -> dict:
        """JSON-ready form for a summary."""
        return asdict(self)


def foreground(image: torch.Tensor, fraction: float = 0.05) -> torch.Tensor:
    """Voxels brighter than ``fraction`` of the 99th percentile of the positive voxels, with enclosed holes (dark
    ventricles and CSF) filled: the scan's head, or its brain when skull-stripped (boolean, same shape)."""
    from scipy.ndimage import binary_fill_holes

    values = image[image > 0]
    if values.numel() == 0:
        return torch.zeros_like(image, dtype=torch.bool)
    top = torch.quantile(values.float()[:: max(1, values.numel() // 50000)], 0.99)
    bright = (image > fraction * top).cpu().numpy()
    filled = np.stack([binary_fill_holes(b) for b in bright.reshape(-1, *bright.shape[2:])]).reshape(bright.shape)
    return torch.as_tensor(filled, device=image.device)


def brain_overlap(warped: torch.Tensor, atlas_mask: torch.Tensor, own_brain: bool) -> dict[str, float]:
    """``coverage``: share of the atlas brain where the warped scan is foreground; ``dice`` (scans without a skull,
    whose foreground is their brain): Dice of that foreground with the atlas brain."""
    inside = atlas_mask > 0
    scan = foreground(warped)
    out = {"coverage": float((scan & inside).sum()) / max(1.0, float(inside.sum()))}
    if own_brain:
        out["dice"] = 2.0 * float((scan & inside).sum()) / max(1.0, float(scan.sum() + inside.sum()))
    return out


def check_quality(figures: dict, thresholds: QualityThresholds = QualityThresholds()) -> dict:
    """Compare ``figures`` (``affine_ncc``, ``ncc``, ``folding``, ``coverage``, optional ``dice``) with ``thresholds``.

    Returns the record for ``summary.json``; raises :class:`RegistrationQualityError` naming the first failed check.

    Example:
        >>> check_quality({"affine_ncc": 0.6, "ncc": 0.7, "folding": 0.0, "coverage": 0.99})["passed"]
        True
        >>> check_quality({"affine_ncc": 0.0, "ncc": 0.2, "folding": 0.0, "coverage": 0.7})
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.register.quality.RegistrationQualityError: registration failed its quality check: brain NCC after the affine alignment 0.000 is below 0.15 (the affine is misplaced; a full-head scan or a scan of another body part?); no result was written
    """
    t = thresholds
    checks = [
        ("affine_ncc", figures["affine_ncc"], t.min_affine_ncc, "above", "brain NCC after the affine alignment",
         "the affine is misplaced; a full-head scan or a scan of another body part?"),
        ("coverage", figures["coverage"], t.min_brain_coverage, "above", "share of the atlas brain covered by the scan",
         "the scan's brain does not lie on the atlas brain"),
        ("dice", figures.get("dice"), t.min_brain_dice, "above", "brain overlap Dice", "the scan's brain does not lie on the atlas brain"),
        ("ncc", figures["ncc"], t.min_ncc, "above", "brain NCC after registration", "the images do not match"),
        ("folding", figures["folding"], t.max_folding, "below", "share of folded brain voxels (det J <= 0)", "the deformation folds"),
    ]
    record = {"figures": {k: v for k, v in figures.items() if v is not None}, "thresholds": t.as_dict(), "passed": True}
    for key, value, limit, side, label, hint in checks:
        if value is None:
            continue
        bad = not np.isfinite(value) or (value < limit if side == "above" else value > limit)
        if bad:
            word = "is below" if side == "above" else "is above"
            message = f"registration failed its quality check: {label} {value:.3f} {word} {limit:g} ({hint}); no result was written"
            raise RegistrationQualityError(message, {**record, "passed": False, "failed": key})
    return record
