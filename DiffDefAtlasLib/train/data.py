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
from ..population.svf_fit import velocity_to_displacement
from ..population.volumes import warped_label_volumes_ml
from ..template import load_template, working_grid


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


def synthetic_mean_velocity(age: np.ndarray | float, sex: np.ndarray | float, grid: Grid, amplitude: float = 2.0) -> np.ndarray:
    """The exact conditional mean ``E[v | age, sex]`` ``(N, ndim, *shape)`` of :func:`synthetic_fields`' population."""
    age = np.atleast_1d(np.asarray(age, dtype=np.float64))
    sex = np.atleast_1d(np.asarray(sex, dtype=np.float64))
    effects = _smooth_basis(grid.shape, 3, np.random.default_rng(12345))
    age_n = (age - 60.0) / 20.0
    flat = age_n[:, None] * effects[0].reshape(1, -1) + (sex[:, None] - 0.5) * 0.5 * effects[1].reshape(1, -1)
    return (amplitude * flat).reshape(len(age), grid.spatial_dims, *grid.shape).astype(np.float32)


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
    rng = np.random.default_rng(seed)
    age = rng.uniform(40.0, 80.0, count)
    sex = rng.integers(0, 2, count).astype(np.float64)
    noise_basis = _smooth_basis(shape, 6, np.random.default_rng(54321))
    coefficients = rng.normal(size=(count, noise_basis.shape[0])) * noise / np.sqrt(noise_basis.shape[0])
    mean = synthetic_mean_velocity(age, sex, grid, amplitude)
    velocities = mean + (coefficients @ noise_basis.reshape(noise_basis.shape[0], -1)).reshape(count, spatial_dims, *shape)
    specs = [
        ConditionSpec("age", "continuous", 40.0, 80.0, "years", description="age at scan", default=60.0),
        ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F"),
    ]
    return FieldSet(velocities.astype(np.float32), {"age": age, "sex": sex}, grid, specs, "synthetic", {"seed": seed})


def population3d_fields(count: int, seed: int = 0, measured: int | None = None) -> FieldSet:
    """``count`` subjects of the 3D population model, conditions age, sex and ventricle volume.

    The ventricle volume needs an integration per subject, so only the first ``measured`` subjects (default: a sixth,
    at most 160) get it; the others have it missing (NaN), which the diffusion stage treats as an unset condition.
    """
    try:
        from ..population import load_population_model
    except ImportError as error:
        raise DiffDefInputError(f"the 3D population model is not available ({error})") from None
    from tqdm import tqdm

    model = load_population_model()
    measured = min(count // 6, 160) if measured is None else min(measured, count)
    samples = model.sample(count, seed, measure=False)
    velocity = np.stack([s.velocity for s in samples]).astype(np.float32)
    ventricles = np.full(count, np.nan)
    for start in tqdm(range(0, measured, 8), desc="ventricle volumes", leave=False):
        # the population model's own definition (PopulationModel.ventricle_volume_ml), in batches of 8
        stop = min(start + 8, measured)
        ventricles[start:stop] = ventricle_volumes_ml(model, velocity[start:stop])
    low, high = np.nanpercentile(ventricles, [1, 99]) if measured else (5.0, 60.0)
    age_range = tuple(float(a) for a in model.condition_ranges["age"])
    specs = [
        ConditionSpec("age", "continuous", minimum=age_range[0], maximum=age_range[1], units="years", description="age at scan", default=round(sum(age_range) / 2)),
        ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F"),
        ConditionSpec("ventricle_volume", "continuous", round(float(low), 2), round(float(high), 2), "mL", description="lateral-ventricle volume (1st-99th percentile of the training subjects)", default=round(float(np.nanmedian(ventricles)), 1) if measured else None),
    ]
    conditions = {
        "age": np.array([s.age for s in samples], dtype=np.float64),
        "sex": np.array([0.0 if s.sex == "F" else 1.0 for s in samples]),
        "ventricle_volume": ventricles,
    }
    return FieldSet(velocity, conditions, model.grid, specs, "population3d", {"seed": seed, "measured_ventricles": measured, "population_card": model.card.get("name", "population3d")})


def ventricle_volumes_ml(model, velocities: np.ndarray) -> np.ndarray:
    """Lateral-ventricle volumes (mL) of the 2 mm template labels warped by ``exp(v)`` for a batch of velocities,
    exactly as :meth:`PopulationModel.ventricle_volume_ml` measures one."""
    import torch


    with torch.no_grad():
        u = velocity_to_displacement(torch.from_numpy(np.ascontiguousarray(velocities, dtype=np.float32)), model.grid, working_grid())
        labels = load_template("2mm").labels
        volumes = [warped_label_volumes_ml(u[i : i + 1], working_grid(), labels)[0] for i in range(len(u))]
    return np.array([v["lateral_ventricles"] for v in volumes])


def oasis2d_fields(split: str = "train") -> FieldSet:
    """Velocities fitted to the OASIS-1 axial slices of ``split`` (``"train"`` or ``"validation"``): age, sex, CDR, nWBV."""
    try:
        from ..population.oasis2d import build_oasis_fields
    except ImportError as error:
        raise DiffDefInputError(f"the OASIS 2D fields are not available ({error})") from None
    fields_ = build_oasis_fields(progress=False).subset(split)
    cond = {k: np.asarray(v, dtype=np.float64) for k, v in fields_.conditions.items()}
    specs = [
        ConditionSpec("age", "continuous", float(np.nanmin(cond["age"])), float(np.nanmax(cond["age"])), "years", description="age at scan", default=75.0),
        ConditionSpec("sex", "categorical", choices=["F", "M"], description="sex", default="F"),
        ConditionSpec("cdr", "continuous", 0.0, float(np.nanmax(cond["cdr"])), "", description="Clinical Dementia Rating (0, 0.5, 1)", default=0.0),
        ConditionSpec("nwbv", "continuous", round(float(np.nanmin(cond["nwbv"])), 3), round(float(np.nanmax(cond["nwbv"])), 3), "fraction", description="normalised whole-brain volume", default=round(float(np.nanmedian(cond["nwbv"])), 3)),
    ]
    conditions = {s.name: cond[s.name] for s in specs}
    return FieldSet(np.asarray(fields_.velocities, dtype=np.float32), conditions, fields_.grid, specs, "oasis2d", {"split": split, "subjects": list(fields_.subject_ids)})
