"""Kernel-regression conditional template, after Davis et al. (2010): a Gaussian-weighted log-Euclidean mean.

For a target condition ``c`` the atlas velocity is the kernel-weighted mean of the training subjects' template-to-
subject velocity fields, ``v(c) = sum_i K(c_i, c) v_i / sum_i K(c_i, c)``, with a Gaussian kernel in normalised
condition space; the atlas is the template warped by ``exp(v(c))``. Averaging velocities and then exponentiating is the
log-Euclidean mean of the deformations. (Davis et al. regress images and deformations jointly; with the subjects'
deformations to one template known, this is the deformation part of their estimator.)

Example:
    >>> from DiffDefAtlasLib.train.data import synthetic_fields
    >>> fields = synthetic_fields(32, 2, shape=(8, 8), seed=0)
    >>> method = KernelRegressionTemplate.from_fields(fields, sigma=0.1)
    >>> tuple(method.velocity({"age": 60, "sex": "F"}).shape)
    (1, 2, 8, 8)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import DiffDefInputError
from ..spatial import Grid
from .methods import VelocityMethod
from ..conditions.space import condition_weights, normalise_raw, normalised_conditions


class KernelRegressionTemplate(VelocityMethod):
    """Gaussian kernel regression of velocity fields over condition space (see the module docstring).

    Attributes:
        velocities: ``(N, ndim, *velocity_grid.shape)`` training velocities (mm).
        points: ``(N, C)`` their normalised conditions.
        specs: the condition specs (order of ``points``).
        sigma: kernel bandwidth in normalised units.
    """

    name = "kernel-regression"

    def __init__(self, velocities: np.ndarray, points: np.ndarray, specs: Sequence[Any], velocity_grid: Grid, sigma: float = 0.1) -> None:
        super().__init__(velocity_grid)
        if len(velocities) != len(points):
            raise DiffDefInputError(f"kernel regression: {len(velocities)} velocity fields but {len(points)} condition rows")
        self.velocities = np.asarray(velocities, dtype=np.float32)
        self.points = np.asarray(points, dtype=np.float64)
        self.specs = list(specs)
        self.sigma = float(sigma)
        self.description = f"kernel regression of {len(velocities)} training velocity fields (Gaussian, sigma {sigma:g} normalised; log-Euclidean mean)"

    @classmethod
    def from_fields(cls, fields, sigma: float = 0.1, condition_names: Sequence[str] | None = None) -> "KernelRegressionTemplate":
        """From a :class:`~DiffDefAtlasLib.train.data.FieldSet` (optionally using only ``condition_names``)."""
        specs = [s for s in fields.specs if condition_names is None or s.name in condition_names]
        raw = np.stack([np.asarray(fields.conditions[s.name], dtype=np.float64) for s in specs], axis=1)
        return cls(fields.velocities, normalise_raw(specs, raw), specs, fields.grid, sigma)

    def weights(self, conditions: Mapping[str, Any]) -> np.ndarray:
        """Normalised kernel weights ``(N,)`` of the training subjects for ``conditions``."""
        target = normalised_conditions(self.specs, conditions)
        w = condition_weights(self.points, target, self.sigma)
        if not np.isfinite(w).all() or w.sum() <= 1e-12:
            raise DiffDefInputError(f"kernel regression: no training subject near {dict(conditions)} (sigma {self.sigma:g})")
        return w / w.sum()

    def velocity(self, conditions: Mapping[str, Any]) -> torch.Tensor:
        w = self.weights(conditions).astype(np.float64)
        flat = self.velocities.reshape(len(self.velocities), -1)
        mean = (w @ flat).reshape(self.velocities.shape[1:]).astype(np.float32)
        return torch.from_numpy(mean)[None]
