"""Condition space shared by the baselines and the centrality measure: conditions -> [0, 1] vectors -> Gaussian weights.

A condition set is a mapping such as ``{"age": 70, "sex": "F"}``. With the model card's condition specs it becomes a
vector in normalised condition space (continuous: ``(x - min) / (max - min)``; categorical: ``index / (n - 1)``), the
space in which Diff-Def's morphology-preservation stage weighs its neighbours (:func:`gaussian_weights`).
Unset conditions are NaN and are left out of distances, so they are marginalised.

Example:
    >>> from DiffDefAtlasLib.conditions.spec import ConditionSpec
    >>> specs = [ConditionSpec("age", "continuous", 40.0, 80.0), ConditionSpec("sex", "categorical", choices=["F", "M"])]
    >>> normalised_conditions(specs, {"age": 60, "sex": "M"}).tolist()
    [0.5, 1.0]
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DiffDefInputError


def gaussian_weights(conditions: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-|c_i - c|^2 / (2 sigma^2))`` for rows ``c_i`` of ``conditions`` (normalised to [0, 1] per condition)."""
    distance2 = np.sum((np.asarray(conditions, dtype=np.float64) - np.asarray(target, dtype=np.float64)[None]) ** 2, axis=1)
    return np.exp(-distance2 / (2.0 * sigma**2))


def raw_condition_vector(specs: Sequence[Any], conditions: Mapping[str, Any]) -> np.ndarray:
    """Condition values in spec order (categorical as the index of its choice; NaN where unset)."""
    out = np.full(len(specs), np.nan)
    for j, spec in enumerate(specs):
        if spec.name not in conditions or conditions[spec.name] is None:
            continue
        value = conditions[spec.name]
        if spec.kind == "categorical":
            choices = [str(c).upper() for c in spec.choices or []]
            if isinstance(value, str):
                if value.upper() not in choices:
                    raise DiffDefInputError(f"{spec.name}: expected one of {spec.choices}, found {value!r}")
                out[j] = choices.index(value.upper())
            else:
                out[j] = float(value)
        else:
            out[j] = float(value)
    return out


def normalise_raw(specs: Sequence[Any], raw: np.ndarray) -> np.ndarray:
    """Raw condition values ``(..., n_conditions)`` (categorical as index) mapped to [0, 1] per condition."""
    out = np.array(raw, dtype=np.float64, copy=True)
    for j, spec in enumerate(specs):
        if spec.kind == "categorical":
            out[..., j] = out[..., j] / max(len(spec.choices or []) - 1, 1)
        else:
            span = float(spec.maximum) - float(spec.minimum)
            out[..., j] = (out[..., j] - float(spec.minimum)) / (span if span > 0 else 1.0)
    return out


def normalised_conditions(specs: Sequence[Any], conditions: Mapping[str, Any]) -> np.ndarray:
    """One condition set as a vector in normalised condition space (NaN where unset)."""
    return normalise_raw(specs, raw_condition_vector(specs, conditions))


def condition_weights(points: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian weights ``exp(-|c_i - c|^2 / 2 sigma^2)`` of normalised points ``(N, C)`` around ``target`` ``(C,)``.

    Conditions unset in ``target`` are left out; a point missing a condition that the target sets gets weight 0.

    Example:
        >>> condition_weights(np.array([[0.0, 0.0], [0.1, 1.0]]), np.array([0.0, np.nan]), 0.1).round(3).tolist()
        [1.0, 0.607]
    """
    if sigma <= 0:
        raise DiffDefInputError(f"sigma: expected a positive bandwidth, found {sigma}")
    used = np.isfinite(target)
    points = np.asarray(points, dtype=np.float64)[:, used]
    weights = gaussian_weights(np.nan_to_num(points, nan=1e6), target[used], sigma)
    return weights


def normalised_condition_space(values: Any, card: Any) -> np.ndarray:
    """Network condition values mapped to [0, 1] per condition (continuous: from [-1, 1]; categorical: index / (n-1))."""
    out = np.array(np.asarray(values), dtype=np.float64)  # a CPU tensor or an array
    for j, spec in enumerate(card.conditions):
        if spec.kind == "categorical":
            out[:, j] = out[:, j] / max(len(spec.choices or []) - 1, 1)
        else:
            out[:, j] = (out[:, j] + 1.0) / 2.0
    return out
