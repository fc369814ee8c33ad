"""Condition columns of a cohort table (age, sex, volumes...): their types, parsing and normalisation statistics.

A :class:`ColumnSpec` says how a cohort column is read; a model card's :class:`~.spec.ConditionSpec` says what a
trained generator accepts (its range comes from these columns' statistics).

Every condition is stored as a float. Categorical conditions are coded as numbers (sex: F = 0, M = 1).
A model is trained on normalised conditions; :class:`ConditionStats` keeps the mean, standard deviation and
the trained range (min/max) of each condition, as JSON next to the cohort table and inside the model card.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..atomic import write_text_atomic
from ..errors import DiffDefInputError


@dataclass(frozen=True)
class ColumnSpec:
    """How one condition column is read and checked.

    ``kind`` is ``"numeric"`` or ``"categorical"``; a categorical column maps its text values (case-insensitive)
    to numbers through ``categories``. ``valid_range`` rejects impossible values (e.g. an age of 250).

    Example:
        >>> ColumnSpec("age", "numeric", "years", (0.0, 120.0)).parse("71.5", where="row 2")
        71.5
    """

    name: str
    kind: str = "numeric"
    unit: str = ""
    valid_range: tuple[float, float] | None = None
    categories: Mapping[str, float] | None = None
    description: str = ""

    def parse(self, text: str, *, where: str = "") -> float:
        """Parse one table cell; an empty cell is a missing value (NaN). Raises :class:`DiffDefInputError`."""
        prefix = f"{where}: " if where else ""
        text = text.strip()
        if text == "" or text.lower() in {"na", "nan", "n/a"}:
            return math.nan
        if self.kind == "categorical":
            assert self.categories is not None
            key = text.lower()
            lookup = {k.lower(): v for k, v in self.categories.items()}
            if key in lookup:
                return float(lookup[key])
            allowed = ", ".join(sorted(self.categories))
            raise DiffDefInputError(f"{prefix}column '{self.name}' expected one of {allowed}, found {text!r}")
        try:
            value = float(text)
        except ValueError:
            raise DiffDefInputError(
                f"{prefix}column '{self.name}' expected a number{f' ({self.unit})' if self.unit else ''}, found {text!r}"
            ) from None
        if not math.isfinite(value):
            raise DiffDefInputError(f"{prefix}column '{self.name}' expected a finite number, found {text!r}")
        if self.valid_range is not None and not (self.valid_range[0] <= value <= self.valid_range[1]):
            lo, hi = self.valid_range
            raise DiffDefInputError(f"{prefix}column '{self.name}' expected a value in [{lo:g}, {hi:g}], found {value:g}")
        return value

    def format(self, value: float) -> str:
        """Write a parsed value back as a table cell (categories by name)."""
        if math.isnan(value):
            return ""
        if self.kind == "categorical" and self.categories:
            for name, code in self.categories.items():
                if code == value:
                    return name
        return f"{value:.6g}"


_SEX = {"F": 0.0, "M": 1.0, "female": 0.0, "male": 1.0}

KNOWN_CONDITIONS: dict[str, ColumnSpec] = {
    spec.name: spec
    for spec in (
        ColumnSpec("age", "numeric", "years", (0.0, 120.0), description="age at scan"),
        ColumnSpec("sex", "categorical", "", None, _SEX, "F = 0, M = 1"),
        ColumnSpec("cdr", "numeric", "", (0.0, 3.0), description="Clinical Dementia Rating"),
        ColumnSpec("mmse", "numeric", "points", (0.0, 30.0), description="Mini-Mental State Examination"),
        ColumnSpec("etiv", "numeric", "mL", (500.0, 3000.0), description="estimated total intracranial volume"),
        ColumnSpec("nwbv", "numeric", "fraction", (0.0, 1.0), description="normalised whole-brain volume"),
        ColumnSpec("asf", "numeric", "", (0.1, 10.0), description="atlas scaling factor"),
        ColumnSpec("ventricle_volume_ml", "numeric", "mL", (0.0, 1000.0), description="lateral ventricles"),
        ColumnSpec("csf_volume_ml", "numeric", "mL", (0.0, 2000.0), description="CSF outside the lateral ventricles"),
        ColumnSpec("gm_volume_ml", "numeric", "mL", (0.0, 2000.0), description="grey matter"),
        ColumnSpec("wm_volume_ml", "numeric", "mL", (0.0, 2000.0), description="white matter"),
        ColumnSpec("brain_volume_ml", "numeric", "mL", (0.0, 3000.0), description="grey + white matter"),
        ColumnSpec("intracranial_volume_ml", "numeric", "mL", (0.0, 4000.0), description="CSF + GM + WM + ventricles"),
        ColumnSpec("gm_fraction", "numeric", "fraction", (0.0, 1.0), description="GM / intracranial volume"),
        ColumnSpec("wm_fraction", "numeric", "fraction", (0.0, 1.0), description="WM / intracranial volume"),
        ColumnSpec("csf_fraction", "numeric", "fraction", (0.0, 1.0), description="all CSF / intracranial volume"),
        ColumnSpec("ventricle_fraction", "numeric", "fraction", (0.0, 1.0), description="ventricles / intracranial volume"),
    )
}


def condition_spec(name: str, extra: Mapping[str, ColumnSpec] | None = None) -> ColumnSpec:
    """The :class:`ColumnSpec` of a known or declared condition; unknown names raise with a suggestion.

    Example:
        >>> condition_spec("sex").categories["M"]
        1.0
    """
    if extra and name in extra:
        return extra[name]
    if name in KNOWN_CONDITIONS:
        return KNOWN_CONDITIONS[name]
    import difflib

    known = sorted(set(KNOWN_CONDITIONS) | set(extra or {}))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise DiffDefInputError(
        f"unknown condition column {name!r}{hint}; known: {', '.join(known)}; declare new ones with extra_conditions"
    )


@dataclass
class ConditionRange:
    """Statistics of one condition over a training cohort (missing values ignored)."""

    mean: float
    std: float
    min: float
    max: float
    count: int


@dataclass
class ConditionStats:
    """Per-condition mean, standard deviation and trained range, with normalisation both ways.

    ``method`` is ``"minmax"`` (trained range to [0, 1], the default: a neighbourhood |dc| <= 0.05 then means 5 % of
    the range) or ``"zscore"`` ((x - mean) / std).

    Example:
        >>> stats = ConditionStats.from_values({"age": [60.0, 80.0]})
        >>> stats.normalise({"age": 70.0})["age"]
        0.5
        >>> stats.denormalise({"age": 0.25})["age"]
        65.0
    """

    ranges: dict[str, ConditionRange] = field(default_factory=dict)
    method: str = "minmax"

    def __post_init__(self) -> None:
        if self.method not in ("minmax", "zscore"):
            raise DiffDefInputError(f"normalisation method must be 'minmax' or 'zscore', found {self.method!r}")

    @property
    def names(self) -> list[str]:
        """Condition names in table order."""
        return list(self.ranges)

    @classmethod
    def from_values(cls, values: Mapping[str, Sequence[float] | np.ndarray], method: str = "minmax") -> "ConditionStats":
        """Statistics of each column of ``values`` (NaN = missing). A column with no value raises."""
        ranges = {}
        for name, column in values.items():
            arr = np.asarray(column, dtype=np.float64)
            arr = arr[np.isfinite(arr)]
            if arr.size == 0:
                raise DiffDefInputError(f"condition '{name}' has no values; cannot compute its statistics")
            ranges[name] = ConditionRange(
                mean=float(arr.mean()), std=float(arr.std()), min=float(arr.min()), max=float(arr.max()), count=int(arr.size)
            )
        return cls(ranges, method)

    def _scale(self, name: str) -> tuple[float, float]:
        if name not in self.ranges:
            raise DiffDefInputError(f"unknown condition '{name}'; this model knows {', '.join(self.names) or 'none'}")
        r = self.ranges[name]
        if self.method == "zscore":
            return r.mean, r.std if r.std > 0 else 1.0
        width = r.max - r.min
        return r.min, width if width > 0 else 1.0

    def normalise(self, conditions: Mapping[str, float | np.ndarray]) -> dict[str, float | np.ndarray]:
        """Map raw condition values (floats or arrays) to the normalised scale."""
        out: dict[str, float | np.ndarray] = {}
        for name, value in conditions.items():
            offset, scale = self._scale(name)
            out[name] = (value - offset) / scale if not isinstance(value, (int, float)) else float((value - offset) / scale)
        return out

    def denormalise(self, conditions: Mapping[str, float | np.ndarray]) -> dict[str, float | np.ndarray]:
        """Inverse of :meth:`normalise`."""
        out: dict[str, float | np.ndarray] = {}
        for name, value in conditions.items():
            offset, scale = self._scale(name)
            out[name] = value * scale + offset if not isinstance(value, (int, float)) else float(value * scale + offset)
        return out

    def check_in_range(self, conditions: Mapping[str, float], tolerance: float = 0.0) -> None:
        """Raise :class:`DiffDefInputError` if a value lies outside the trained range (widened by ``tolerance`` of it).

        Example:
            >>> ConditionStats.from_values({"age": [60, 80]}).check_in_range({"age": 95})
            Traceback (most recent call last):
            ...
            DiffDefAtlasLib.errors.DiffDefInputError: condition 'age' = 95 is outside the trained range [60, 80]
        """
        for name, value in conditions.items():
            self._scale(name)
            r = self.ranges[name]
            pad = tolerance * (r.max - r.min)
            if not (r.min - pad <= value <= r.max + pad):
                raise DiffDefInputError(f"condition '{name}' = {value:g} is outside the trained range [{r.min:g}, {r.max:g}]")

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (written atomically to ``path`` when given)."""
        text = json.dumps({"method": self.method, "conditions": {k: asdict(v) for k, v in self.ranges.items()}}, indent=2)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "ConditionStats":
        """Read statistics from JSON text or a JSON file path."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise DiffDefInputError(f"{path}: condition statistics file not found")
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            ranges = {name: ConditionRange(**values) for name, values in data["conditions"].items()}
            return cls(ranges, data.get("method", "minmax"))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DiffDefInputError(f"condition statistics: expected {{'method', 'conditions'}} JSON, found an error: {exc}") from None
