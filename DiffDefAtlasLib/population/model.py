"""The 3D population model: a linear-Gaussian model of template-to-subject velocity fields given age and sex.

The velocity of a subject of age ``a`` and sex ``s`` (F = 0, M = 1) on the 4 mm grid is

    v = v0 + (a - a_ref) * v_age + s * v_sex + sum_k z_k * m_k,   z_k ~ N(0, 1)

with the modes ``m_k = sigma_k e_k`` from the residuals of the real IXI fits (:mod:`.regression`). Its deformation is
``u = exp(v)`` (:func:`~.svf_fit.velocity_to_displacement`: ``v`` resampled to the 2 mm working grid, then scaling and
squaring), which warps the template into the subject: ``subject(x) = template(x + u(x))``. Because the latent codes
have mean zero, ``E[v | a, s] = v0 + (a - a_ref) v_age + s v_sex`` exactly, and the conditional-mean deformation and
atlas follow from it with no approximation: the ground truth a generator can be checked against.

Example:
    >>> model = load_population_model()
    >>> model.mean_velocity(60, "F").shape
    (3, 40, 48, 40)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..bundles import CARD_FILE, read_card, verified_weights, weights_entry, write_card
from ..conditions.resolve import resolve_value
from ..conditions.spec import ConditionSpec
from ..errors import DiffDefInputError
from ..imageio import Volume
from ..resources import resource_path
from ..spatial import Grid, resample_displacement, warp_image, warp_labels
from ..template import load_template, template_grid, working_grid
from .svf_fit import velocity_to_displacement
from .volumes import warped_label_volumes_ml
from ..atomic import atomic_path

MODEL_FOLDER = ("models", "population3d")
WEIGHTS_FILE = "population3d.safetensors"
SEXES = ("F", "M")


def sex_code(sex: str | float) -> float:
    """Sex as a number: ``"F"`` -> 0, ``"M"`` -> 1 (case-insensitive); numbers in [0, 1] pass (0.5 = average).

    Example:
        >>> sex_code("m"), sex_code(0.5)
        (1.0, 0.5)
    """
    if isinstance(sex, str):
        key = sex.strip().upper()
        if key in ("F", "FEMALE"):
            return 0.0
        if key in ("M", "MALE"):
            return 1.0
        raise DiffDefInputError(f"sex: expected 'F', 'M' or a number in [0, 1], found {sex!r}")
    try:
        value = float(sex)
    except (TypeError, ValueError):
        raise DiffDefInputError(f"sex: expected 'F', 'M' or a number in [0, 1], found {sex!r}") from None
    if not 0.0 <= value <= 1.0:
        raise DiffDefInputError(f"sex: expected 'F', 'M' or a number in [0, 1], found {value:g}")
    return value


@dataclass
class PopulationSample:
    """One sampled subject: its velocity ``(3, 40, 48, 40)`` on the model grid, conditions and measured volumes.

    ``latent`` holds the residual codes ``z`` (``velocity = mean_velocity(age, sex) + z @ modes``).
    Volumes are NaN when sampling was asked not to measure them.
    """

    velocity: np.ndarray
    age: float
    sex: str
    ventricle_volume_ml: float
    tissue_volumes_ml: dict[str, float]
    latent: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


class PopulationModel:
    """Linear-Gaussian model of velocity fields given age and sex; see the module docstring.

    Attributes:
        grid: the 4 mm velocity grid (40x48x40), the working grid zoomed by 2.
        condition_ranges: ``{"age": (min, max) of the fitted subjects, "sex": ["F", "M"]}``.
        age_reference: the age at which ``v0`` is the mean (mean age of the fitted subjects).
        modes: ``(K, 3, 40, 48, 40)`` residual modes ``sigma_k e_k`` in mm.
        card: the model card (data, trends, checksum) when loaded from disk.
    """

    def __init__(
        self,
        intercept: np.ndarray,
        age_slope: np.ndarray,
        sex_effect: np.ndarray,
        modes: np.ndarray,
        grid: Grid,
        age_reference: float,
        age_range: tuple[float, float],
        card: dict | None = None,
    ) -> None:
        shape = (grid.spatial_dims, *grid.shape)
        for name, array in (("intercept", intercept), ("age_slope", age_slope), ("sex_effect", sex_effect)):
            if tuple(array.shape) != shape:
                raise DiffDefInputError(f"population model {name}: expected shape {shape}, found {tuple(array.shape)}")
        if modes.ndim != len(shape) + 1 or tuple(modes.shape[1:]) != shape:
            raise DiffDefInputError(f"population model modes: expected (K, *{shape}), found {tuple(modes.shape)}")
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.age_slope = np.asarray(age_slope, dtype=np.float32)
        self.sex_effect = np.asarray(sex_effect, dtype=np.float32)
        self.modes = np.asarray(modes, dtype=np.float32)
        self._flat_modes = self.modes.reshape(len(self.modes), -1)
        self.grid = grid
        self.age_reference = float(age_reference)
        self.condition_ranges: dict = {"age": (float(age_range[0]), float(age_range[1])), "sex": list(SEXES)}
        self.card = card or {}

    @property
    def n_components(self) -> int:
        """Number of residual modes ``K``."""
        return len(self.modes)

    # -- conditions ------------------------------------------------------------------------------------------------
    def check_age(self, age: float, allow_extrapolation: bool = False) -> float:
        """Validate an age against the fitted range (or only for finiteness with ``allow_extrapolation``), with the
        same rule and messages as a generator's conditions (:func:`~DiffDefAtlasLib.conditions.resolve.resolve_value`)."""
        lo, hi = self.condition_ranges["age"]
        spec = ConditionSpec("age", minimum=lo, maximum=hi, units="years")
        return float(resolve_value(spec, age, allow_extrapolation, "population model", warn=False))

    def mean_velocity(self, age: float, sex: str | float, allow_extrapolation: bool = False) -> np.ndarray:
        """The conditional mean velocity ``E[v | age, sex]`` ``(3, 40, 48, 40)`` in mm on :attr:`grid`.

        Example:
            >>> load_population_model().mean_velocity(45.0, 0.5).dtype
            dtype('float32')
        """
        age = self.check_age(age, allow_extrapolation)
        sex = sex_code(sex)
        mean = self.intercept + np.float32(age - self.age_reference) * self.age_slope + np.float32(sex) * self.sex_effect
        return mean.astype(np.float32)

    # -- deformations ---------------------------------------------------------------------------------------------
    def displacement(self, velocity: np.ndarray, grid: Grid | None = None) -> np.ndarray:
        """``exp(v)`` of a velocity on :attr:`grid` as a displacement ``(3, *grid.shape)`` (default: the working grid).

        The deformation is integrated on the 2 mm working grid; other grids get that displacement resampled.
        """
        work = working_grid()
        tensor = torch.from_numpy(np.ascontiguousarray(velocity, dtype=np.float32))[None]
        with torch.no_grad():
            displacement = velocity_to_displacement(tensor, self.grid, work)
            if grid is not None and grid != work:
                displacement = resample_displacement(displacement, work, grid)
        return displacement[0].numpy()

    def mean_displacement(self, age: float, sex: str | float, grid: Grid | None = None, allow_extrapolation: bool = False) -> np.ndarray:
        """The exact conditional-mean deformation ``exp(E[v | age, sex])`` ``(3, *grid.shape)`` (default: working grid).

        Example:
            >>> load_population_model().mean_displacement(70, "M").shape
            (3, 80, 96, 80)
        """
        return self.displacement(self.mean_velocity(age, sex, allow_extrapolation), grid)

    def mean_atlas(self, age: float, sex: str | float, allow_extrapolation: bool = False) -> tuple[Volume, Volume]:
        """The template warped by the conditional-mean deformation, at 1 mm: ``(atlas T1, labels)``.

        The field is integrated on the working grid, resampled to the 1 mm template grid, and warps the 1 mm T1
        (linear) and labels (nearest).

        Example:
            >>> atlas, labels = load_population_model().mean_atlas(70, "F")  # doctest: +SKIP
        """
        grid = template_grid("1mm")
        template = load_template("1mm")
        displacement = torch.from_numpy(self.mean_displacement(age, sex, grid, allow_extrapolation))[None]
        with torch.no_grad():
            t1 = torch.from_numpy(np.array(template.t1.array, dtype=np.float32))[None, None]
            atlas = warp_image(t1, displacement, grid, moving_grid=template.t1.grid)[0, 0].numpy()
            labels = torch.from_numpy(np.asarray(template.labels.array).astype(np.int64))[None, None]
            warped = warp_labels(labels, displacement.double(), grid, moving_grid=template.labels.grid)[0, 0].numpy()
        return Volume(atlas.astype(np.float32), grid.affine.copy()), Volume(warped.astype(np.uint8), grid.affine.copy())

    # -- volumes --------------------------------------------------------------------------------------------------
    def label_volumes_ml(self, velocity: np.ndarray) -> dict[str, float]:
        """Volumes (mL) of the 2 mm template labels warped by ``exp(velocity)``: csf, gm, wm, lateral_ventricles, total_csf."""
        work = working_grid()
        displacement = torch.from_numpy(self.displacement(velocity))[None]
        return warped_label_volumes_ml(displacement, work, load_template("2mm").labels)[0]

    def ventricle_volume_ml(self, velocity: np.ndarray) -> float:
        """Lateral-ventricle volume (mL) of the template warped by ``exp(velocity)`` (label 4 counted on the 2 mm grid).

        Example:
            >>> model = load_population_model()
            >>> round(model.ventricle_volume_ml(np.zeros((3, 40, 48, 40), np.float32)), 1)
            16.7
        """
        return self.label_volumes_ml(velocity)["lateral_ventricles"]

    # -- sampling -------------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        seed: int,
        ages: float | Sequence[float] | None = None,
        sexes: str | Sequence[str | float] | None = None,
        measure: bool = True,
        allow_extrapolation: bool = False,
    ) -> list[PopulationSample]:
        """Draw ``n`` subjects; deterministic for a given ``seed`` (and conditions).

        Ages default to uniform over the fitted range and sexes to F/M with equal odds. Subject ``i`` has its own random
        stream (seeded by ``(seed, i)``) that always draws its age, sex and latent code in that order, so subject ``i``
        is the same whatever ``n``, and its latent code does not depend on the conditions given. With
        ``measure=False`` the volumes are NaN (much faster: no integration).

        Example:
            >>> samples = load_population_model().sample(2, seed=0, ages=[40, 70], sexes="F", measure=False)
            >>> [s.age for s in samples], samples[0].velocity.shape
            ([40.0, 70.0], (3, 40, 48, 40))
        """
        if int(n) < 0:
            raise DiffDefInputError(f"n: expected a non-negative number of samples, found {n}")
        n = int(n)
        lo, hi = self.condition_ranges["age"]
        drawn_ages, drawn_sexes, latent = [], [], np.zeros((n, self.n_components))
        for i in range(n):
            rng = np.random.default_rng([int(seed), i])  # one stream per subject: sample i does not depend on n
            drawn_ages.append(float(rng.uniform(lo, hi)))
            drawn_sexes.append(SEXES[int(rng.integers(0, 2))])
            latent[i] = rng.standard_normal(self.n_components)
        age_list = self._per_sample(ages, n, "ages", drawn_ages)
        sex_list = self._per_sample(sexes, n, "sexes", drawn_sexes)
        samples = []
        for i in range(n):
            sex_value = sex_code(sex_list[i])
            if sex_value not in (0.0, 1.0):
                raise DiffDefInputError(f"sexes: a sampled subject is 'F' or 'M' (0 or 1), found {sex_list[i]!r}")
            mean = self.mean_velocity(age_list[i], sex_value, allow_extrapolation)
            velocity = mean + (latent[i].astype(np.float32) @ self._flat_modes).reshape(mean.shape)
            volumes = self.label_volumes_ml(velocity) if measure else {}
            samples.append(
                PopulationSample(
                    velocity=velocity.astype(np.float32),
                    age=float(age_list[i]),
                    sex=SEXES[int(sex_value)],
                    ventricle_volume_ml=volumes.get("lateral_ventricles", math.nan),
                    tissue_volumes_ml=volumes or {},
                    latent=latent[i].copy(),
                )
            )
        return samples

    @staticmethod
    def _per_sample(values, n: int, name: str, default: list) -> list:
        if values is None:
            return default
        if isinstance(values, (str, int, float, np.floating, np.integer)):
            return [values] * n
        values = list(values)
        if len(values) != n:
            raise DiffDefInputError(f"{name}: expected one value or {n} values, found {len(values)}")
        return values

    # -- storage --------------------------------------------------------------------------------------------------
    def tensors(self, dtype=np.float16) -> dict[str, np.ndarray]:
        """The parameters as named arrays (for safetensors)."""
        return {
            "intercept": self.intercept.astype(dtype),
            "age_slope": self.age_slope.astype(dtype),
            "sex_effect": self.sex_effect.astype(dtype),
            "modes": self.modes.astype(dtype),
        }

    def save(self, folder: str | Path, card: dict, dtype=np.float16) -> Path:
        """Write ``population3d.safetensors`` and ``model_card.json`` (with the weights' SHA-256) into ``folder``."""
        from safetensors.numpy import save_file


        folder = Path(folder)
        weights = folder / WEIGHTS_FILE
        with atomic_path(weights) as tmp:
            save_file(self.tensors(dtype), str(tmp), metadata={"format": "diffdef-population3d", "version": "1"})
        card = dict(card)
        card.update(
            {
                "weights": weights_entry(weights),
                "weights_dtype": np.dtype(dtype).name,
                "grid": {"shape": list(self.grid.shape), "affine": self.grid.affine.tolist()},
                "age_reference": self.age_reference,
                "condition_ranges": {"age": list(self.condition_ranges["age"]), "sex": list(SEXES)},
                "n_components": self.n_components,
            }
        )
        write_card(folder, card, indent=1)
        self.card = card
        return weights

    @classmethod
    def load(cls, folder: str | Path) -> "PopulationModel":
        """Read a model saved by :meth:`save`; the weights' checksum is verified against the card."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        card_path = folder / CARD_FILE
        card = read_card(card_path, "population model card")
        weights = verified_weights(folder, card, "population model weights")
        arrays = load_file(str(weights))
        grid = Grid(tuple(card["grid"]["shape"]), np.array(card["grid"]["affine"]))
        return cls(
            arrays["intercept"].astype(np.float32),
            arrays["age_slope"].astype(np.float32),
            arrays["sex_effect"].astype(np.float32),
            arrays["modes"].astype(np.float32),
            grid,
            card["age_reference"],
            tuple(card["condition_ranges"]["age"]),
            card,
        )


@lru_cache(maxsize=1)
def _bundled() -> PopulationModel:
    folder = resource_path(*MODEL_FOLDER)
    model = PopulationModel.load(folder)
    for array in (model.intercept, model.age_slope, model.sex_effect, model.modes):
        array.setflags(write=False)
    return model


def load_population_model() -> PopulationModel:
    """The bundled 3D population model (``Resources/models/population3d``), read once per process.

    Example:
        >>> model = load_population_model()
        >>> model.grid.shape, model.condition_ranges["sex"]
        ((40, 48, 40), ['F', 'M'])
    """
    return _bundled()
