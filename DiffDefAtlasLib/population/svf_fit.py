"""Instance optimisation of a template-to-subject stationary velocity field (2D or 3D).

The fitted velocity ``v`` gives ``u = exp(v)`` that warps the *template* into the subject:
``subject(x) ~ template(x + u(x))``. The loss is the mean squared difference between the warped template maps and
the subject's maps (tissue probabilities or normalised intensities), plus MONAI's bending-energy and diffusion
penalties on ``v`` in physical units. Optimisation runs coarse to fine (Adam) with the maps average-pooled at each
level. On each level the velocity is resampled to that level's data grid and integrated there by
:func:`velocity_to_displacement`, with ``FitSettings.integration_steps`` (5 while fitting, for speed; the canonical
``exp(v)`` uses 7 on the working grid; the difference is about 0.1 mm and is recorded in the model card).

Adam updates every element independently, so a batch of subjects is fitted as independent problems at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from monai.losses import BendingEnergyLoss, DiffusionLoss

from ..errors import DiffDefInputError
from ..spatial import Grid, integrate_velocity, resample_displacement, warp_image

#: Scaling-and-squaring steps of the canonical deformation ``exp(v)``.
INTEGRATION_STEPS = 7


def velocity_to_displacement(velocity: torch.Tensor, velocity_grid: Grid, grid: Grid, steps: int = INTEGRATION_STEPS) -> torch.Tensor:
    """The deformation ``exp(v)`` on ``grid``: ``v`` resampled from ``velocity_grid`` to ``grid``, then integrated.

    This is the one definition of a velocity's deformation used by the population models.

    Example:
        >>> g = Grid((16, 16), np.eye(3))  # doctest: +SKIP
        >>> velocity_to_displacement(torch.zeros(1, 2, 8, 8), g.zoomed(2), g).shape  # doctest: +SKIP
        torch.Size([1, 2, 16, 16])
    """
    if velocity_grid != grid:
        velocity = resample_displacement(velocity, velocity_grid, grid)
    return integrate_velocity(velocity, grid, steps=steps)


@dataclass(frozen=True)
class FitSettings:
    """Settings of :func:`fit_velocity`.

    ``levels`` are pooling factors of the data grid, coarse to fine, each with its number of ``iterations`` and
    Adam ``learning_rates`` (mm per step). ``velocity_factor`` is the zoom of the velocity grid relative to the data
    grid (2: velocity at twice the spacing). A level coarser than the velocity grid optimises the velocity on its own
    grid; the others optimise it on the velocity grid and integrate it on the level's data grid.
    ``bending_weight`` and ``diffusion_weight`` weigh the smoothness penalties (:func:`smoothness_penalty`) against the
    mean squared map difference; ``channel_weights`` optionally weigh the map channels.

    Example:
        >>> FitSettings(levels=(2, 1), iterations=(40, 40), learning_rates=(0.3, 0.1)).velocity_factor
        2
    """

    levels: tuple[int, ...] = (4, 2)
    iterations: tuple[int, ...] = (60, 60)
    velocity_factor: int = 2
    learning_rates: tuple[float, ...] = (0.3, 0.1)
    bending_weight: float = 1.0
    diffusion_weight: float = 0.001
    integration_steps: int = 5
    channel_weights: tuple[float, ...] | None = None


def smoothness_penalty(velocity: torch.Tensor, grid: Grid, bending_weight: float, diffusion_weight: float) -> torch.Tensor:
    """Per batch item ``(B,)``: weighted bending energy (mm/mm^2)^2 plus diffusion (mm/mm)^2 of ``velocity`` on ``grid``.

    MONAI's losses take derivatives per voxel; dividing by the spacing's powers puts them in physical units, so a
    weight means the same on every level of the pyramid.
    """
    spacing = float(min(grid.spacing))
    total = velocity.new_zeros(velocity.shape[0])
    if bending_weight:
        total = total + bending_weight * BendingEnergyLoss(reduction="none")(velocity).flatten(1).mean(1) / spacing**4
    if diffusion_weight:
        total = total + diffusion_weight * DiffusionLoss(reduction="none")(velocity).flatten(1).mean(1) / spacing**2
    return total


def _pool(maps: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return maps
    pool = F.avg_pool3d if maps.dim() == 5 else F.avg_pool2d
    return pool(maps, factor)


def _check(template_maps: torch.Tensor, subject_maps: torch.Tensor, grid: Grid, settings: FitSettings) -> None:
    n = grid.spatial_dims
    if template_maps.dim() != n + 2 or subject_maps.dim() != n + 2:
        raise DiffDefInputError(f"maps must be (B, C, *{grid.shape}), found {tuple(template_maps.shape)} and {tuple(subject_maps.shape)}")
    if tuple(template_maps.shape[1:]) != tuple(subject_maps.shape[1:]) or tuple(subject_maps.shape[2:]) != grid.shape:
        raise DiffDefInputError(
            f"template and subject maps must share channels and the grid shape {grid.shape}, "
            f"found {tuple(template_maps.shape)} and {tuple(subject_maps.shape)}"
        )
    if not len(settings.levels) == len(settings.iterations) == len(settings.learning_rates):
        raise DiffDefInputError(
            f"FitSettings: {len(settings.levels)} levels need as many iteration counts and learning rates, "
            f"found {len(settings.iterations)} and {len(settings.learning_rates)}"
        )
    for factor in set(settings.levels) | {settings.velocity_factor}:
        if any(s % factor for s in grid.shape):
            raise DiffDefInputError(f"grid shape {grid.shape} is not divisible by the pooling factor {factor}")


def fit_velocity(
    template_maps: torch.Tensor,
    subject_maps: torch.Tensor,
    grid: Grid,
    settings: FitSettings = FitSettings(),
    initial_velocity: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Grid, dict]:
    """Fit ``v`` so that ``template_maps`` warped by ``exp(v)`` match ``subject_maps`` (both on ``grid``).

    Args:
        template_maps: ``(1 or B, C, *shape)`` maps of the template (moving image).
        subject_maps: ``(B, C, *shape)`` maps of the subjects (fixed images).
        grid: the data grid of both.
        settings: pyramid, iterations, learning rate and regularisation.
        initial_velocity: optional start on the velocity grid.

    Returns:
        ``(velocity (B, ndim, *velocity_shape), velocity_grid, info)``; ``info`` holds the final data and smoothness
        losses per subject.

    Example:
        >>> v, vgrid, info = fit_velocity(template, subject, working_grid())  # doctest: +SKIP
    """
    _check(template_maps, subject_maps, grid, settings)
    batch = subject_maps.shape[0]
    ndim = grid.spatial_dims
    dtype = torch.float32
    template_maps = template_maps.to(dtype).expand(batch, *template_maps.shape[1:])
    subject_maps = subject_maps.to(dtype)
    weights = None
    if settings.channel_weights is not None:
        weights = torch.tensor(settings.channel_weights, dtype=dtype).view(1, -1, *([1] * ndim))
    velocity_grid = grid.zoomed(settings.velocity_factor)
    current = initial_velocity.to(dtype) if initial_velocity is not None else None
    current_grid = velocity_grid
    data_loss = smooth_loss = torch.zeros(batch)
    history: list[float] = []
    for factor, iterations, learning_rate in zip(settings.levels, settings.iterations, settings.learning_rates):
        data_grid = grid.zoomed(factor)
        param_grid = grid.zoomed(max(factor, settings.velocity_factor))
        if current is None:
            current = torch.zeros(batch, ndim, *param_grid.shape, dtype=dtype)
        elif current_grid != param_grid:
            current = resample_displacement(current, current_grid, param_grid)
        current_grid = param_grid
        fixed = _pool(subject_maps, factor)
        moving = _pool(template_maps, factor)
        velocity = current.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([velocity], lr=learning_rate)
        for _ in range(iterations):
            optimiser.zero_grad()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*native grid_sample.*")
                warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
                displacement = velocity_to_displacement(velocity, param_grid, data_grid, settings.integration_steps)
                warped = warp_image(moving, displacement, data_grid)
                residual = (warped - fixed) ** 2
                if weights is not None:
                    residual = residual * weights
                data_loss = residual.flatten(1).mean(1)
                smooth_loss = smoothness_penalty(velocity, param_grid, settings.bending_weight, settings.diffusion_weight)
            total = (data_loss + smooth_loss).sum()
            total.backward()
            history.append(float(total.detach()) / batch)
            optimiser.step()
        current = velocity.detach()
    info = {"data_loss": data_loss.detach().tolist(), "smoothness_loss": smooth_loss.detach().tolist(), "history": history}
    if current_grid != velocity_grid:
        current = resample_displacement(cast(torch.Tensor, current), current_grid, velocity_grid)
    return cast(torch.Tensor, current), velocity_grid, info
