"""Atlas methods compared by the evaluation: each turns a condition set into a deformation of the template.

A method is anything with a ``name``, a ``description`` and ``displacement(conditions, grid)`` returning
``(1, ndim, *grid.shape)`` RAS-mm displacement ``u`` with ``atlas(x) = template(x + u(x))``. Every method then goes
through the same scoring code (:mod:`.population3d`, :mod:`.heldout`), so the figures are comparable.

Here: the unconditional template, Diff-Def (bundled generator, with or without integration), and the population
model's exact conditional mean (a reference, not a method). The kernel-regression template and the conditional
template network live in their own modules.

Example:
    >>> from DiffDefAtlasLib.spatial import Grid
    >>> TemplateBaseline().displacement({"age": 70}, Grid((4, 4), np.eye(3))).abs().max().item()
    0.0
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np
import torch

from ..errors import DiffDefInputError
from ..spatial import Grid, resample_displacement
from ..population.svf_fit import velocity_to_displacement
from ..generate import load_generator


class AtlasMethod(Protocol):
    """What the evaluation needs from a method."""

    name: str
    description: str

    def displacement(self, conditions: Mapping[str, Any], grid: Grid) -> torch.Tensor:
        """The deformation ``(1, ndim, *grid.shape)`` (RAS mm) of the template for ``conditions``."""


class TemplateBaseline:
    """The unconditional template: the identity deformation for every condition."""

    name = "template"
    description = "unconditional template (identity deformation)"

    def displacement(self, conditions: Mapping[str, Any], grid: Grid) -> torch.Tensor:
        return torch.zeros(1, grid.spatial_dims, *grid.shape)


class VelocityMethod:
    """Base of the methods that predict a stationary velocity on ``velocity_grid``: ``u = exp(v)`` on the target grid
    (:func:`~DiffDefAtlasLib.population.svf_fit.velocity_to_displacement`, the population models' own definition)."""

    name = "velocity"
    description = ""

    def __init__(self, velocity_grid: Grid, integration_steps: int = 7) -> None:
        self.velocity_grid = velocity_grid
        self.integration_steps = int(integration_steps)

    def velocity(self, conditions: Mapping[str, Any]) -> torch.Tensor:
        """``(1, ndim, *velocity_grid.shape)`` in mm."""
        raise NotImplementedError

    @torch.no_grad()
    def displacement(self, conditions: Mapping[str, Any], grid: Grid) -> torch.Tensor:
        velocity = self.velocity(conditions).float()
        return velocity_to_displacement(velocity, self.velocity_grid, grid, self.integration_steps)


class DiffDefMethod(VelocityMethod):
    """A Diff-Def generator (DDIM -> decoder -> velocity). With ``integrate=False`` the velocity is used directly as the
    displacement (no scaling and squaring): a proxy for Diff-Def as published, whose decoder outputs a displacement."""

    def __init__(self, generator, name: str = "diffdef", description: str = "", integrate: bool = True, seed: int = 0, steps: int | None = None) -> None:
        super().__init__(generator.velocity_grid, int(generator.card.sampling.get("integration_steps", 7)))
        self.generator = generator
        self.name = name
        self.description = description or f"Diff-Def generator '{generator.name}'"
        self.integrate = integrate
        self.seed = seed
        self.steps = steps

    def velocity(self, conditions: Mapping[str, Any]) -> torch.Tensor:
        names = set(self.generator.card.condition_names)
        wanted = {k: v for k, v in conditions.items() if k in names}
        return self.generator.sample_velocity(wanted, seed=self.seed, steps=self.steps, allow_extrapolation=True).cpu()

    @torch.no_grad()
    def displacement(self, conditions: Mapping[str, Any], grid: Grid) -> torch.Tensor:
        velocity = self.velocity(conditions).float()
        if self.integrate:
            # the generator's own pipeline: integrate on its working grid, then resample
            return self.generator.velocity_to_displacement(velocity.to(self.generator.device), grid).cpu()
        return resample_displacement(velocity, self.velocity_grid, grid)


class PopulationTruth(VelocityMethod):
    """The 3D population model's exact conditional-mean deformation ``exp(E[v | age, sex])`` (a reference row)."""

    name = "truth"
    description = "population model's exact conditional mean exp(E[v | age, sex]) (reference)"

    def __init__(self, model) -> None:
        super().__init__(model.grid)
        self.model = model

    def velocity(self, conditions: Mapping[str, Any]) -> torch.Tensor:
        mean = self.model.mean_velocity(float(conditions["age"]), conditions.get("sex", 0.5), allow_extrapolation=True)
        return torch.from_numpy(np.ascontiguousarray(mean))[None]


def diffdef_rows(name: str, variant: str | None = None, include_no_integration: bool = True) -> list[DiffDefMethod]:
    """The Diff-Def rows of an evaluation: the bundled generator ``name``, the same generator's other MP variant when
    its model folder ``variant`` is given (exported with the MP stage if the bundled one has none, or without it if
    it has), and the no-integration proxy of the bundled one. Each row is named by whether its card says it has MP."""

    def row(generator, where: str) -> DiffDefMethod:
        mp = bool(generator.card.training.get("mp_finetuned"))
        return DiffDefMethod(generator, "diffdef" if mp else "diffdef (no MP)", f"{where} {name} generator ({'with' if mp else 'without'} the MP stage)")

    bundled = load_generator(name, "cpu")
    rows = [row(bundled, "bundled")]
    if variant:
        other = row(load_generator(variant, "cpu"), f"{variant}:")
        if other.name == rows[0].name:
            raise DiffDefInputError(f"{variant}: expected the {name} generator {'without' if rows[0].name == 'diffdef' else 'with'} the MP stage, found the same kind as the bundled one")
        rows.append(other)
    if include_no_integration:
        rows.append(DiffDefMethod(bundled, "diffdef, no integration", f"{name} decoder velocity used directly as the displacement (proxy for Diff-Def as published)", integrate=False))
    return rows
