"""Training data of the generators: velocity fields with their conditions, from one of three sources.

- ``population3d``: the 3D population model (:func:`DiffDefAtlasLib.population.load_population_model`): unlimited
  samples of template-to-subject velocities at 4 mm with age, sex and ventricle volume.
- ``oasis2d``: velocities fitted to the OASIS-1 axial slices (:func:`DiffDefAtlasLib.population.oasis2d.build_oasis_fields`).
- ``synthetic``: smooth random fields whose mean depends linearly on the conditions; for tests and development.

Every source gives a :class:`FieldSet`: velocities ``(N, ndim, *shape)`` float32 (RAS mm on ``grid``) and condition
values (floats; categories as their index in the card's ``choices``; NaN = missing).

Example:
    >>> fields = synthetic_fields(8, spatial_dims=2, shape=(16, 16), seed=0)
    >>> fields.velocities.shape, sorted(fields.conditions)
    ((8, 2, 16, 16), ['age', 'sex'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DiffDefInputError
from ..generate.model_card import ConditionSpec
from ..spatial.grid import Grid


@dataclass
class FieldSet:
    """Velocity fields and their conditions, plus what the model card needs to know about them."""

    velocities: np.ndarray
    conditions: dict[str, np.ndarray]
    grid: Grid
    specs: list[ConditionSpec]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.velocities.shape[0])

    def subset(self, index: np.ndarray) -> "FieldSet":
        """The fields at ``index``."""
        return FieldSet(self.velocities[index], {k: v[index] for k, v in self.conditions.items()}, self.grid, self.specs, self.source, self.info)

    def condition_matrix(self) -> np.ndarray:
        """Raw condition values ``(N, n_conditions)`` in card order (categorical as index)."""
        return np.stack([np.asarray(self.conditions[s.name], dtype=np.float64) for s in self.specs], axis=1)


def _smooth_basis(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` smooth random fields ``(count, ndim, *shape)`` of unit RMS (low-frequency cosines)."""
    ndim = len(shape)
    axes = np.meshgrid(*[np.linspace(0, np.pi, s) for s in shape], indexing="ij")
    basis = np.zeros((count, ndim, *shape))
    for b in range(count):
        for d in range(ndim):
            freq = rng.integers(0, 3, size=ndim)
            phase = rng.uniform(0, np.pi)
            basis[b, d] = np.cos(sum(f * a for f, a in zip(freq, axes)) + phase)
        basis[b] /= np.sqrt(np.mean(basis[b] ** 2)) + 1e-8
    return basis.astype(np.float32)


def synthetic_fields(
    count: int,
    spatial_dims: int = 3,
    shape: tuple[int, ...] | None = None,
    grid: Grid | None = None,
    seed: int = 0,
    amplitude: float = 2.0,
    noise: float = 0.5,
) -> FieldSet:
    """Smooth velocity fields (mm) whose mean depends on age (linear) and sex (offset), plus smooth subject noise.

    Deterministic in ``seed``; the age and sex effects are the same for every seed, so two calls describe one
    population.
    """
    if grid is None:
        shape = shape or ((40, 48, 40) if spatial_dims == 3 else (44, 52))
        grid = Grid(shape, np.diag([4.0] * spatial_dims + [1.0]))
    shape = grid.shape
    effects = _smooth_basis(shape, 3, np.random.default_rng(12345))
    rng = np.random.default_rng(seed)
    age = rng.uniform(40.0, 80.0, count)
    sex = rng.integers(0, 2, count).astype(np.float64)
    age_n = (age - 60.0) / 20.0
    noise_basis = _smooth_basis(shape, 6, np.random.default_rng(54321))
    coefficients = rng.normal(size=(count, noise_basis.shape[0])) * noise / np.sqrt(noise_basis.shape[0])
    velocities = (
        amplitude * (age_n[:, None] * effects[0][None].reshape(1, -1) + (sex[:, None] - 0.5) * 0.5 * effects[1][None].reshape(1, -1))
        + coefficients @ noise_basis.reshape(noise_basis.shape[0], -1)
    ).reshape(count, spatial_dims, *shape)
    specs = [
        ConditionSpec("age", "continuous", 40.0, 80.0, "years", description="age at scan", default=60.0),
        ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F"),
    ]
    return FieldSet(velocities.astype(np.float32), {"age": age, "sex": sex}, grid, specs, "synthetic", {"seed": seed})


def population3d_fields(count: int, seed: int = 0) -> FieldSet:
    """``count`` samples of the 3D population model (age, sex and ventricle volume)."""
    try:
        from ..population import load_population_model
    except ImportError as error:
        raise DiffDefInputError(f"the 3D population model is not available ({error})") from None
    model = load_population_model()
    sample = model.sample(count, seed)
    velocity = np.asarray(sample.velocity, dtype=np.float32)
    if velocity.ndim == 4:
        velocity = velocity[None]
    sexes = np.array([0.0 if str(s).upper().startswith("F") else 1.0 for s in np.atleast_1d(sample.sex)])
    ranges = model.condition_ranges
    age_range = _range(ranges, "age")
    vent_range = _range(ranges, "ventricle_volume", "ventricle_volume_ml")
    specs = [
        ConditionSpec("age", "continuous", *age_range, "years", description="age at scan", default=round(sum(age_range) / 2)),
        ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F"),
        ConditionSpec("ventricle_volume", "continuous", *vent_range, "mL", description="lateral-ventricle volume", default=round(sum(vent_range) / 2, 1)),
    ]
    conditions = {
        "age": np.atleast_1d(np.asarray(sample.age, dtype=np.float64)),
        "sex": sexes,
        "ventricle_volume": np.atleast_1d(np.asarray(sample.ventricle_volume_ml, dtype=np.float64)),
    }
    return FieldSet(velocity, conditions, model.grid, specs, "population3d", {"seed": seed, "model": type(model).__name__})


def _range(ranges: Any, *names: str) -> tuple[float, float]:
    for name in names:
        if name in ranges:
            low, high = ranges[name]
            return float(low), float(high)
    raise DiffDefInputError(f"population model: no range for condition {names[0]!r} (has {', '.join(ranges)})")


def oasis2d_fields(split: str = "train") -> FieldSet:
    """Velocities fitted to the OASIS-1 axial slices of ``split`` (``"train"`` or ``"validation"``)."""
    try:
        from ..population.oasis2d import build_oasis_fields
    except ImportError as error:
        raise DiffDefInputError(f"the OASIS 2D fields are not available ({error})") from None
    fields_ = build_oasis_fields()
    index = _split_index(fields_, split)
    velocities = np.asarray(fields_.velocities, dtype=np.float32)[index]
    cond = {k: np.asarray(v) for k, v in dict(fields_.conditions).items()}
    sexes = np.array([0.0 if str(s).upper().startswith("F") else 1.0 for s in cond["sex"]])[index]
    conditions = {"age": cond["age"].astype(np.float64)[index], "sex": sexes}
    specs = [ConditionSpec("age", "continuous", float(np.nanmin(conditions["age"])), float(np.nanmax(conditions["age"])), "years", description="age at scan", default=75.0),
             ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F")]
    for name, units, description in (("cdr", "", "Clinical Dementia Rating"), ("nwbv", "fraction", "normalised whole-brain volume")):
        if name in cond:
            values = cond[name].astype(np.float64)[index]
            conditions[name] = values
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            specs.append(ConditionSpec(name, "continuous", low, high, units, description=description, default=round((low + high) / 2, 3)))
    return FieldSet(velocities, conditions, fields_.grid, specs, "oasis2d", {"split": split})


def _split_index(fields_: Any, split: str) -> np.ndarray:
    n = len(fields_.velocities)
    for attribute in ("split", "splits"):
        value = getattr(fields_, attribute, None)
        if value is not None and not isinstance(value, dict):
            return np.flatnonzero(np.asarray(value) == split)
    for attribute in (f"{split}_index", f"{split}_indices"):
        if getattr(fields_, attribute, None) is not None:
            return np.asarray(getattr(fields_, attribute))
    raise DiffDefInputError(f"OASIS fields: cannot find the '{split}' split among {n} subjects")
