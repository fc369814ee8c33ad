"""Evaluation of conditional atlases: metrics, baselines, the two reference evaluations, report and figures.

- :mod:`.metrics`: Dice, folding, smoothness, centrality, sharpness, volume errors, endpoint error.
- :mod:`.methods`, :mod:`.kernel_regression`, :mod:`.template_network`, :mod:`.joint_template_network`: the methods
  compared (template, kernel regression after Davis et al., conditional template network after Dalca et al.,
  regressed on known fields or trained jointly with registration from images, Diff-Def).
- :mod:`.population3d`: against the 3D population model's exact truth; :mod:`.heldout`: on held-out images (OASIS 2D).
- :mod:`.report`, :mod:`.figures`, :mod:`.cli`: ``diffdef-atlas evaluate``.

Example:
    >>> from DiffDefAtlasLib.evaluate import regularity, sharpness, centrality  # doctest: +SKIP
"""

from .metrics import (
    centrality,
    dice_per_label,
    endpoint_error,
    exact_neighbourhood_mean_displacement,
    label_volumes,
    regularity,
    sharpness,
    trend_slope,
    trend_slope_interval,
    volume_errors,
    weighted_mean_displacement,
)
from .records import EvaluationResult

__all__ = [
    "EvaluationResult",
    "centrality",
    "dice_per_label",
    "endpoint_error",
    "exact_neighbourhood_mean_displacement",
    "label_volumes",
    "regularity",
    "sharpness",
    "trend_slope",
    "trend_slope_interval",
    "volume_errors",
    "weighted_mean_displacement",
]
