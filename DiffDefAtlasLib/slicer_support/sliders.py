"""Condition sliders from a model card: one control per condition with its trained range, step and default, and
the conditions as JSON for the parameter node.

Only numpy at file scope.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from ..conditions.spec import KINDS
from ..errors import DiffDefInputError
from ..results import format_number


class ConditionLike(Protocol):
    """The fields of ``DiffDefAtlasLib.api.ConditionSpec`` that the GUI reads."""

    name: str
    kind: str
    minimum: float | None
    maximum: float | None
    units: str
    choices: Sequence[str] | None
    default: Any


class ModelCardLike(Protocol):
    """The fields of ``DiffDefAtlasLib.api.ModelCard`` that the GUI reads."""

    name: str
    spatial_dims: int
    description: str
    conditions: Sequence[ConditionLike]


@dataclass(frozen=True)
class ConditionControl:
    """How the GUI shows one condition: a slider over ``[slider_minimum, slider_maximum]`` or a combo box of choices.

    ``minimum`` / ``maximum`` are the trained range. The slider range equals it unless extrapolation is allowed, so a
    value outside the trained range cannot be chosen by accident.
    """

    name: str
    label: str
    kind: str  # "continuous" or "categorical"
    units: str = ""
    minimum: float | None = None
    maximum: float | None = None
    slider_minimum: float | None = None
    slider_maximum: float | None = None
    single_step: float = 1.0
    decimals: int = 0
    choices: tuple[str, ...] = ()
    default: Any = None

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def trained_range_text(self) -> str:
        """E.g. ``"trained: 45–90 years"`` or ``"choices: F, M"``."""
        if self.is_categorical:
            return "choices: " + ", ".join(self.choices)
        units = f" {self.units}" if self.units else ""
        return f"trained: {format_number(self.minimum)}–{format_number(self.maximum)}{units}"

    def is_outside_trained_range(self, value: Any) -> bool:
        """True for a number outside ``[minimum, maximum]`` or a choice not in :attr:`choices`."""
        if self.is_categorical:
            return str(value) not in self.choices
        assert self.minimum is not None and self.maximum is not None
        value = float(value)
        return value < float(self.minimum) - 1e-9 or value > float(self.maximum) + 1e-9

    def clamp(self, value: Any) -> Any:
        """The nearest value the slider can show (categorical: the value if known, else the default)."""
        if self.is_categorical:
            return value if str(value) in self.choices else self.default
        assert self.slider_minimum is not None and self.slider_maximum is not None
        return min(float(self.slider_maximum), max(float(self.slider_minimum), float(value)))


def nice_step(span: float, steps: int = 100) -> float:
    """A round slider step (1, 2 or 5 times a power of ten) giving about ``steps`` steps over ``span``.

    Example:
        >>> nice_step(45.0)
        0.5
    """
    if not span > 0:
        return 1.0
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10.0 * power


def condition_controls(card: ModelCardLike, allow_extrapolation: bool = False, margin: float = 0.25) -> list[ConditionControl]:
    """One :class:`ConditionControl` per condition of a model card, in card order.

    With ``allow_extrapolation`` the slider reaches ``margin`` times the trained span beyond each end (not below 0
    when the trained minimum is non-negative, since ages and volumes cannot be negative).

    Example:
        >>> from types import SimpleNamespace as S
        >>> card = S(name="m", spatial_dims=3, description="", conditions=[
        ...     S(name="age", kind="continuous", minimum=45, maximum=85, units="years", choices=None, default=65)])
        >>> c = condition_controls(card, allow_extrapolation=True)[0]
        >>> (c.slider_minimum, c.slider_maximum, c.single_step)
        (35.0, 95.0, 0.5)
    """
    controls = []
    for spec in card.conditions:
        units = str(getattr(spec, "units", "") or "")
        label = spec.name.replace("_", " ")
        if spec.kind not in KINDS:  # the kinds a model card accepts, nothing more
            raise DiffDefInputError(f"model card {card.name}: condition '{spec.name}' has kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
        if spec.kind == "categorical":
            choices = tuple(str(c) for c in (spec.choices or ()))
            if not choices:
                raise DiffDefInputError(f"model card {card.name}: categorical condition '{spec.name}' lists no choices")
            choice = str(spec.default) if spec.default is not None and str(spec.default) in choices else choices[0]
            controls.append(ConditionControl(spec.name, label, "categorical", units, choices=choices, default=choice))
            continue
        if spec.minimum is None or spec.maximum is None or not float(spec.maximum) > float(spec.minimum):
            raise DiffDefInputError(
                f"model card {card.name}: condition '{spec.name}' needs a trained range minimum < maximum, "
                f"found {spec.minimum}..{spec.maximum}"
            )
        lo, hi = float(spec.minimum), float(spec.maximum)
        span = hi - lo
        step = nice_step(span)
        decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
        slider_lo, slider_hi = lo, hi
        if allow_extrapolation:
            slider_lo, slider_hi = lo - margin * span, hi + margin * span
            if lo >= 0:
                slider_lo = max(0.0, slider_lo)
        default = float(spec.default) if spec.default is not None else (lo + hi) / 2.0
        default = min(hi, max(lo, default))
        controls.append(
            ConditionControl(
                spec.name, f"{label} ({units})" if units else label, "continuous", units, lo, hi,
                slider_lo, slider_hi, step, decimals, default=default,
            )
        )
    return controls


def default_conditions(controls: Sequence[ConditionControl]) -> dict[str, Any]:
    """The card's default value of every condition."""
    return {c.name: c.default for c in controls}


def conditions_outside_trained_range(controls: Sequence[ConditionControl], conditions: Mapping[str, Any]) -> list[str]:
    """Names of the set conditions whose value lies outside the trained range (for a warning next to the sliders)."""
    by_name = {c.name: c for c in controls}
    return [name for name, value in conditions.items() if name in by_name and by_name[name].is_outside_trained_range(value)]


def conditions_to_json(conditions: Mapping[str, Any]) -> str:
    """Conditions as stable JSON text (the parameter node stores them this way)."""
    return json.dumps({str(k): v for k, v in conditions.items()}, sort_keys=True)


def conditions_from_json(text: str) -> dict[str, Any]:
    """Inverse of :func:`conditions_to_json`; empty text gives ``{}``."""
    if not text or not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise DiffDefInputError(f"stored conditions must be a JSON object, found {text[:60]!r}")
    return value
