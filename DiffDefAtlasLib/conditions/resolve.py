"""Checking user conditions against a model card and encoding them for the network.

A condition may be left unset (absent or ``None``): the network then uses its learned "null" token for it, so the
atlas is marginalised over that condition (classifier-free guidance). Continuous values are normalised to [-1, 1]
over the trained range; categorical values become their index in ``choices``.

Example:
    >>> from DiffDefAtlasLib.generate.model_card import ConditionSpec, ModelCard
    >>> card = ModelCard("demo", 3, conditions=[ConditionSpec("age", minimum=40, maximum=80),
    ...                                          ConditionSpec("sex", "categorical", choices=["F", "M"])])
    >>> resolve_conditions(card, {"age": "60", "sex": "m"})
    {'age': 60.0, 'sex': 'M'}
    >>> encode_conditions(card, {"age": 60.0})
    (array([0., 0.], dtype=float32), array([ True, False]))
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np

from ..errors import DiffDefInputError
from .spec import ConditionedModel, ConditionSpec


class ExtrapolationWarning(UserWarning):
    """A condition lies outside the range the model was trained on."""


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``"age=72"`` into ``("age", "72")``.

    Example:
        >>> parse_assignment("sex=F")
        ('sex', 'F')
    """
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise DiffDefInputError(f"condition {text!r}: expected NAME=VALUE, e.g. age=72")
    return name.strip(), value.strip()


def resolve_value(spec: ConditionSpec, value: Any, allow_extrapolation: bool, model: str, warn: bool = True) -> float | str:
    """One value checked against its spec: a known category (its canonical spelling), or a finite number within
    the trained range (beyond it only with ``allow_extrapolation``, with an :class:`ExtrapolationWarning` when
    ``warn``). ``model`` names the model in the messages.

    Example:
        >>> resolve_value(ConditionSpec("age", minimum=40, maximum=80, units="years"), "71", False, "demo")
        71.0
    """
    if spec.kind == "categorical":
        text = str(value).strip()
        lookup = {c.lower(): c for c in spec.choices or []}
        if text.lower() not in lookup:
            raise DiffDefInputError(f"condition '{spec.name}': expected one of {', '.join(spec.choices or [])}, found {value!r}")
        return lookup[text.lower()]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DiffDefInputError(f"condition '{spec.name}': expected a number ({spec.describe_range()}), found {value!r}") from None
    if not math.isfinite(number):
        raise DiffDefInputError(f"condition '{spec.name}': expected a finite number, found {value!r}")
    assert spec.minimum is not None and spec.maximum is not None
    if not spec.minimum <= number <= spec.maximum:
        message = (
            f"condition '{spec.name}' = {number:g} is outside the trained range [{spec.minimum:g}, {spec.maximum:g}]"
            f"{(' ' + spec.units) if spec.units else ''} of model '{model}'"
        )
        if not allow_extrapolation:
            raise DiffDefInputError(message + "; pass --allow-extrapolation (allow_extrapolation=True) to go beyond it")
        if warn:
            warnings.warn(message + "; extrapolating", ExtrapolationWarning, stacklevel=3)
    return number


def resolve_conditions(card: ConditionedModel, conditions: Mapping[str, Any] | None, allow_extrapolation: bool = False) -> dict[str, float | str]:
    """Validate ``conditions`` against the card: known names, numbers within the trained range, valid categories.

    Returns the set conditions with canonical values (floats, or the category as spelled in the card); unset ones
    (absent or ``None``) are left out. Outside the range: :class:`DiffDefInputError`, or an
    :class:`ExtrapolationWarning` with ``allow_extrapolation``.
    """
    if conditions is not None and not isinstance(conditions, Mapping):
        raise DiffDefInputError(
            f"conditions: expected a mapping of names to values such as {{'age': 72, 'sex': 'F'}}, found {type(conditions).__name__}")
    resolved: dict[str, float | str] = {}
    for name, value in (conditions or {}).items():
        spec = card.condition(name)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "unset")):
            continue
        resolved[spec.name] = resolve_value(spec, value, allow_extrapolation, card.name)
    return resolved


def extrapolated_conditions(card: ConditionedModel, resolved: Mapping[str, float | str]) -> dict[str, dict[str, Any]]:
    """The resolved numeric conditions outside the card's trained range, each with its value and that range
    (empty when every condition is within it): what ``summary.json`` and the preview record of an extrapolation.

    Example:
        >>> from DiffDefAtlasLib.conditions.spec import ConditionSpec
        >>> class Card:
        ...     name = "demo"
        ...     def condition(self, name):
        ...         return ConditionSpec("age", minimum=40, maximum=80, units="years")
        >>> extrapolated_conditions(Card(), {"age": 90.0})
        {'age': {'value': 90.0, 'trained_range': [40.0, 80.0], 'units': 'years'}}
    """
    outside: dict[str, dict[str, Any]] = {}
    for name, value in resolved.items():
        spec = card.condition(name)
        if spec.kind == "categorical" or spec.minimum is None or spec.maximum is None:
            continue
        if not spec.minimum <= float(value) <= spec.maximum:
            outside[spec.name] = {"value": float(value), "trained_range": [float(spec.minimum), float(spec.maximum)], "units": spec.units}
    return outside


def extrapolation_words(outside: Mapping[str, Mapping[str, Any]]) -> str:
    """``"EXTRAPOLATED: age 90 outside 40-80 years"`` for a picture's label; ``""`` when nothing is outside.

    Example:
        >>> extrapolation_words({"age": {"value": 90.0, "trained_range": [40.0, 80.0], "units": "years"}})
        'EXTRAPOLATED: age 90 outside 40-80 years'
    """
    if not outside:
        return ""
    parts = [f"{name} {entry['value']:g} outside {entry['trained_range'][0]:g}-{entry['trained_range'][1]:g}"
             f"{(' ' + entry['units']) if entry.get('units') else ''}" for name, entry in outside.items()]
    return "EXTRAPOLATED: " + "; ".join(parts)


def encode_conditions(card: ConditionedModel, resolved: Mapping[str, float | str]) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs for resolved conditions: normalised values ``(n,)`` float32 and a ``present`` mask ``(n,)``."""
    values = np.zeros(len(card.conditions), dtype=np.float32)
    present = np.zeros(len(card.conditions), dtype=bool)
    for i, spec in enumerate(card.conditions):
        if spec.name not in resolved:
            continue
        present[i] = True
        values[i] = encode_value(spec, resolved[spec.name])
    return values, present


def encode_value(spec: ConditionSpec, value: float | str) -> float:
    """Normalised network value of one condition: [-1, 1] over the trained range, or the category index."""
    if spec.kind == "categorical":
        return float((spec.choices or []).index(str(value)))
    assert spec.minimum is not None and spec.maximum is not None
    return 2.0 * (float(value) - spec.minimum) / (spec.maximum - spec.minimum) - 1.0
