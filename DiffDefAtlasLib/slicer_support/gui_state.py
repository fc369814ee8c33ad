"""The state behind the Slicer module's widgets, decided without Qt.

- :func:`slicer_models`: the model cards the module offers (3D only);
- :func:`initial_condition_state`: slider values and "use" boxes from the conditions stored in the parameter node;
- :func:`sweep_range`: the default range and limits of the condition-sweep spin boxes;
- :func:`status_text` / :func:`overlay_summary`: the status lines under the Generate and Register buttons;
- :func:`auto_jacobian_half_width`: the *Auto* button of the Jacobian range;
- :func:`deformation_display`: what the transform display node shows for the *Deformation* choice.
- :func:`display_changes` / :func:`remember_display`: which display settings changed since the module last
  applied them to a node (so a GUI change leaves what the user set in Slicer alone).

Example:
    >>> deformation_display("grid", scale=2.0, spacing_mm=8.0)
    DeformationDisplay(visible=True, mode='grid', scale_percent=200.0, spacing_mm=8.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .overlays import jacobian_window_level
from .sliders import ConditionControl

#: The *Deformation* choices of the module and the foreground overlays, as stored in the parameter node.
DEFORMATION_MODES = ("grid", "glyph", "none")
FOREGROUND_CHOICES = ("jacobian", "magnitude", "none")


def slicer_models(cards: Iterable[Any]) -> list[Any]:
    """The model cards the module lists: 3D models only (2D models are for the command line), in card order."""
    return [card for card in cards if int(getattr(card, "spatial_dims", 0)) == 3]


def initial_condition_state(
    controls: Sequence[ConditionControl], stored: Mapping[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """``(values, used)`` for freshly built condition widgets.

    ``values`` holds each control's stored value clamped to what its slider can show (the card default when none is
    stored); ``used`` the conditions whose "use" box is ticked: the stored ones, or all of them when nothing is stored
    yet (a new model).

    Example:
        >>> from DiffDefAtlasLib.slicer_support.sliders import ConditionControl
        >>> age = ConditionControl("age", "age", "continuous", minimum=45, maximum=85, slider_minimum=45,
        ...                        slider_maximum=85, default=65.0)
        >>> initial_condition_state([age], {"age": 99})
        ({'age': 85.0}, {'age'})
    """
    values = {c.name: c.clamp(stored[c.name] if c.name in stored else c.default) for c in controls}
    known = {c.name for c in controls}
    used = {name for name in stored if name in known} if stored else set(known)
    return values, used


@dataclass(frozen=True)
class SweepRange:
    """Default values and limits of the sweep spin boxes for one continuous condition."""

    start: float
    stop: float
    step: float
    minimum: float
    maximum: float
    step_minimum: float
    decimals: int


def sweep_range(control: ConditionControl, steps: int = 8) -> SweepRange:
    """The trained range in about ``steps`` steps (never finer than the slider step); limits are the slider's.

    Example:
        >>> from DiffDefAtlasLib.slicer_support.sliders import ConditionControl
        >>> age = ConditionControl("age", "age", "continuous", minimum=45, maximum=85, slider_minimum=35,
        ...                        slider_maximum=95, single_step=0.5, decimals=1)
        >>> sweep_range(age)
        SweepRange(start=45.0, stop=85.0, step=5.0, minimum=35.0, maximum=95.0, step_minimum=0.5, decimals=1)
    """
    if control.is_categorical:
        raise ValueError(f"condition '{control.name}' is categorical; sweeps vary a continuous condition")
    assert control.minimum is not None and control.maximum is not None
    assert control.slider_minimum is not None and control.slider_maximum is not None
    lo, hi = float(control.minimum), float(control.maximum)
    step = max(float(control.single_step), (hi - lo) / max(1, int(steps)))
    return SweepRange(lo, hi, step, float(control.slider_minimum), float(control.slider_maximum),
                      float(control.single_step), int(control.decimals))


def status_text(first: str, summary: Mapping[str, Any] | None, seconds: float | None = None,
                warnings: Sequence[str] = ()) -> str:
    """``"Atlas ready on cpu (1.2 s)"`` plus one line per warning (e.g. a fall back from CUDA to the CPU).

    Example:
        >>> status_text("Atlas ready", {"device": "cpu"}, 1.23, ["CUDA ran out of memory; ran on the CPU"])
        'Atlas ready on cpu (1.2 s)\\nCUDA ran out of memory; ran on the CPU'
    """
    parts = [first]
    device = (summary or {}).get("device")
    if device:
        parts.append(f"on {device}")
    if seconds is not None:
        parts.append(f"({seconds:.1f} s)")
    return "\n".join([" ".join(parts), *[str(w) for w in warnings]])


#: Summary entries shown under the overlays: (key in the library's summary, label). Generation summaries use the
#: first four, registration summaries ``folding_ratio``.
SUMMARY_ENTRIES = (
    ("folding_ratio_nonpositive", "folding (det J <= 0)"),
    ("folding_ratio", "folding (det J <= 0)"),
    ("detj_min", "det J min"),
    ("detj_max", "det J max"),
    ("displacement_max_norm_mm", "max |u| (mm)"),
)


def overlay_summary(summary: Mapping[str, Any] | None) -> str:
    """One line on folding, det J range and displacement from a generation or registration summary.

    Example:
        >>> overlay_summary({"folding_ratio_nonpositive": 0.0, "detj_min": 0.41, "detj_max": 1.93})
        'folding (det J <= 0): 0, det J min: 0.41, det J max: 1.93'
    """
    summary = summary or {}
    parts = []
    for key, label in SUMMARY_ENTRIES:
        value = summary.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{label}: {value:.4g}")
    return ", ".join(parts)


def auto_jacobian_half_width(jacobian: np.ndarray, limits: tuple[float, float] = (0.05, 2.0)) -> float:
    """The *Auto* Jacobian range: half the window of :func:`DiffDefAtlasLib.slicer_support.overlays.jacobian_window_level`, kept
    within ``limits`` (the range of the parameter node's ``jacobianHalfWidth``)."""
    half = jacobian_window_level(jacobian).window / 2.0
    return float(min(limits[1], max(limits[0], half)))


@dataclass(frozen=True)
class DeformationDisplay:
    """What the grid transform's display node shows: ``mode`` is ``"grid"`` or ``"glyph"`` when visible."""

    visible: bool
    mode: str
    scale_percent: float
    spacing_mm: float


def deformation_display(mode: str, scale: float = 1.0, spacing_mm: float = 8.0) -> DeformationDisplay:
    """Display settings for a *Deformation* choice (``grid``, ``glyph`` or ``none``), a magnification and a spacing.

    The scale is the factor the drawn displacements are magnified by (``vtkMRMLTransformDisplayNode`` takes percent).
    """
    mode = str(mode).strip().lower()
    if mode not in DEFORMATION_MODES:
        raise ValueError(f"deformation display must be one of {', '.join(DEFORMATION_MODES)}, found {mode!r}")
    if not scale > 0 or not spacing_mm > 0:
        raise ValueError(f"scale and spacing must be > 0, found {scale} and {spacing_mm}")
    return DeformationDisplay(mode != "none", mode, 100.0 * float(scale), float(spacing_mm))


#: Node attribute holding the display settings the module last applied to that node (JSON), so that a GUI change
#: applies only what changed and leaves what the user set in Slicer (window/level, opacity...) alone otherwise.
APPLIED_DISPLAY_ATTRIBUTE = "DiffDefAtlas.appliedDisplay"


def _applied(record: str | None) -> dict[str, Any]:
    try:
        applied = json.loads(record) if record else {}
    except (TypeError, ValueError):
        return {}
    return applied if isinstance(applied, dict) else {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))
    return bool(a == b)


def display_changes(record: str | None, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that differ from the settings last applied (``record``, the JSON text of
    :data:`APPLIED_DISPLAY_ATTRIBUTE`; missing or unreadable: everything differs). Values are JSON values.

    Example:
        >>> display_changes('{"window": 1.0, "legend": true}', {"window": 1.0, "legend": False})
        {'legend': False}
    """
    applied = _applied(record)
    return {key: value for key, value in wanted.items() if key not in applied or not _same(applied[key], value)}


def remember_display(record: str | None, changes: Mapping[str, Any]) -> str:
    """The new ``record`` once ``changes`` have been applied (the other entries are kept).

    Example:
        >>> remember_display('{"window": 1.0}', {"legend": True})
        '{"legend": true, "window": 1.0}'
    """
    applied = _applied(record)
    applied.update(changes)
    return json.dumps(applied, sort_keys=True)
