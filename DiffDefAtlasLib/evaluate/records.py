"""What an evaluation run returns: one row of metrics per (method, condition), plus slices and series for figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EvaluationResult:
    """Rows of metrics and what the figures need.

    Attributes:
        name: the evaluation (e.g. ``"population3d"``).
        rows: one dict per (method, condition): ``method``, condition columns, then metric columns.
        methods: method name -> description.
        metric_names: metric columns in display order.
        slices: ``(method, condition label)`` -> ``{"atlas": 2D array, "jacobian": 2D array}`` (mid slices).
        data_points: data used for trends (e.g. ``{"age": [...], "ventricle": [...], "sex": [...]}``).
        notes: lines for the report (settings, caveats).
        units: metric name -> unit string.
    """

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    slices: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    data_points: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def condition_label(conditions: dict[str, Any]) -> str:
    """A short label such as ``"age=70 sex=F"``.

    Example:
        >>> condition_label({"age": 70.0, "sex": "F"})
        'age=70 sex=F'
    """
    return " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in conditions.items())


def mid_slice(array: np.ndarray) -> np.ndarray:
    """The axial (last-axis) middle slice of a 3D array, or the 2D array itself."""
    array = np.asarray(array)
    return array[..., array.shape[-1] // 2] if array.ndim == 3 else array
